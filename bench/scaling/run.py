"""How cost grows with size: time per item and peak RSS of `build-data` and the training loader
at growing sizes, each size in a fresh process (so its peak RSS is its own).

- build-data: a two-dataset recipe over image and speech code shards (32 image codes, 150–300
  speech codes per pair, the reference's lengths), ``--num-samples`` from 10k up.
- loader: the training loader over 1 → 200 dataset shards (packed 512-token rows), 200 batches.

Not part of the test suite or ``bench/run_all`` (slow at the top sizes); flat time per item
(±20 %) and bounded RSS are the goal. Run:

    PYTHONPATH=. python bench/scaling/run.py [--build 10000,100000,1000000] [--num-proc 1] [--loader 1,20,200]

Prints one JSON line per size and a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORDS = "a the red green blue circle square star small large piano violin slow fast calm hello world".split()


def _tokenizer(d: Path) -> Path:
    from bench._support import grown_tokenizer_dir, tiny_base_tokenizer

    return grown_tokenizer_dir(d, tiny_base_tokenizer(d, WORDS, lines=3000, words_per_line=12))[0]


def _shards(d: Path, n_pairs: int) -> None:
    from anygpt.data.shards import write_shard

    rng = random.Random(1)
    for modality, size, lo, hi in (("image", 8192, 32, 32), ("speech", 1024, 150, 300)):
        rows = [{"id": f"{modality}{i}", "modality": modality,
                 "codes": [rng.randrange(size) for _ in range(rng.randint(lo, hi))],
                 "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))), "source": ""}
                for i in range(n_pairs)]
        write_shard(d / modality / "s0.parquet", rows, {"fingerprint": f"fp-{modality}", "backend": "bench",
                                                         "modality": modality, "codebook_size": size})


def child_build(tok: str, recipe: str, out: str, num_proc: int) -> None:
    from anygpt.data.pretrain import build_pretrain_from_recipe
    from anygpt.data.recipe import PretrainRecipe
    from anygpt.data.tokenizer import load_grown_tokenizer

    t, layout = load_grown_tokenizer(tok)
    t0 = time.perf_counter()
    build_pretrain_from_recipe(PretrainRecipe.load(recipe), t, layout, out, num_proc=num_proc)
    dt = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": dt, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "worker_rss_mb": kids}))


def child_loader(dirs: list[str], batches: int) -> None:
    from anygpt.data.loader import MixtureLoader, load_dataset_dir

    t0 = time.perf_counter()
    loader = MixtureLoader([load_dataset_dir(d) for d in dirs], None, 4, 512, True, 0, 0, 0, 1, True, None, 4)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(batches):
        next(loader)
    dt = time.perf_counter() - t0
    loader.close()
    print(json.dumps({"seconds": dt, "open_seconds": t_open, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        sys.exit(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="10000,100000", help="build-data sizes (samples)")
    ap.add_argument("--num-proc", default="1", help="build-data processes; a list (1,2) runs each size with each")
    ap.add_argument("--loader", default="1,20,200", help="loader: numbers of dataset shards")
    ap.add_argument("--batches", type=int, default=200)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        tok = _tokenizer(tmp)
        _shards(tmp, 5000)
        for n in [int(x) for x in args.build.split(",") if x]:
            (tmp / "recipe.yaml").write_text(json.dumps({"num_samples": n, "seed": 0, "datasets": [
                {"name": "img", "shards": str(tmp / "image"), "modality": "image", "weight": 1},
                {"name": "sp", "shards": str(tmp / "speech"), "modality": "speech", "weight": 1}]}))
            for procs in [int(x) for x in args.num_proc.split(",")]:
                out = tmp / f"out{n}_{procs}"
                r = _child(["--child-build", str(tok), str(tmp / "recipe.yaml"), str(out), str(procs)])
                results.append({"stage": "build-data", "size": n, "num_proc": procs,
                                "us_per_item": round(r["seconds"] / n * 1e6, 1), "items_per_s": round(n / r["seconds"]),
                                "peak_rss_mb": round(r["rss_mb"]), "worker_peak_rss_mb": round(r["worker_rss_mb"])})
                print(json.dumps(results[-1]), flush=True)
                last = out
        from datasets import load_from_disk

        small = load_from_disk(str(last)).select(range(500))
        for k in [int(x) for x in args.loader.split(",") if x]:
            dirs = []
            for i in range(k):
                dirs.append(str(tmp / f"shard{k}_{i}"))
                small.save_to_disk(dirs[-1])
            r = _child(["--child-loader", str(args.batches), *dirs])
            results.append({"stage": "loader", "size": k, "us_per_batch": round(r["seconds"] / args.batches * 1e6, 1),
                            "open_s": round(r["open_seconds"], 2), "peak_rss_mb": round(r["rss_mb"])})
            print(json.dumps(results[-1]), flush=True)
    for stage in ("build-data", "loader"):
        rs = [r for r in results if r["stage"] == stage and r.get("num_proc", 1) == results[0].get("num_proc", 1)]
        if len(rs) > 1:
            key = "us_per_item" if stage == "build-data" else "us_per_batch"
            print(json.dumps({"stage": stage, "sizes": [r["size"] for r in rs],
                              "time_per_item_vs_smallest": [round(r[key] / rs[0][key], 2) for r in rs],
                              "peak_rss_mb": [r["peak_rss_mb"] for r in rs]}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-build":
        child_build(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-loader":
        child_loader(sys.argv[3:], int(sys.argv[2]))
    else:
        main()
