"""How cost grows with size: time per item and peak RSS of the tokenize job, `build-data` and the
training loader at growing sizes, each size in a fresh process (so its peak RSS is its own).

- tokenize: the tokenize job (``anygpt tokenize``'s code, 1,000-item shards, its default reader
  processes) on 64×64 PNG pictures with a demo k-means image tokenizer, 1k → 10k items; peak RSS
  of the job and, separately, of its reader processes (forked: pages shared with the job count in both).
- build-data: a two-dataset recipe over image and speech code shards (32 image codes, 150–300
  speech codes per pair, the reference's lengths), ``--num-samples`` from 10k up.
- loader: the training loader over 1 → 200 dataset shards of 500 samples each (40–300 tokens,
  packed 512-token rows, batch 4), ``--batches`` batches.

Not part of the test suite or ``bench/run_all`` (slow at the top sizes); flat time per item
(±20 %) and bounded RSS are the goal. Run:

    PYTHONPATH=. python bench/scaling/run.py [--tokenize 1000,10000] [--build 10000,100000,1000000] [--num-proc 1] [--loader 1,20,200]

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
    print(json.dumps({"seconds": dt, "rss_mb": _peak_rss_mb(), "worker_rss_mb": kids}))


def child_loader(dirs: list[str], batches: int) -> None:
    from anygpt.data.loader import MixtureLoader, load_dataset_dir

    t0 = time.perf_counter()
    loader = MixtureLoader([load_dataset_dir(d) for d in dirs], None, 4, 512, True, 0, 0, 0, 1, True, None, 4)
    t_open = time.perf_counter() - t0
    # the first batch also plans the epoch (a pass over every sample's length, once per epoch, so
    # proportional to the data and spread over its batches): timed separately
    t0 = time.perf_counter()
    next(loader)
    t_plan = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(batches):
        next(loader)
    dt = time.perf_counter() - t0
    loader.close()
    print(json.dumps({"seconds": dt, "open_seconds": t_open, "plan_seconds": t_plan, "rss_mb": _peak_rss_mb()}))


def _pictures(d: Path, n: int) -> Path:
    """``n`` 64×64 PNG pictures (a coloured box on a coloured ground) and their manifest."""
    from PIL import Image

    rng = random.Random(2)
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        im = Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3)))
        x, y = rng.randrange(40), rng.randrange(40)
        im.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, x + rng.randint(8, 24), y + rng.randint(8, 24)))
        im.save(d / f"p{i}.png")
        rows.append(json.dumps({"id": f"p{i}", "path": f"p{i}.png"}))
    (d / "m.jsonl").write_text("\n".join(rows) + "\n")
    return d / "m.jsonl"


def _peak_rss_mb() -> float:
    """This process's own peak RSS (``VmHWM``). ``getrusage``'s ``ru_maxrss`` is not used: on
    Linux it keeps the parent's high-water mark across fork + exec, so a child started by a
    1 GB parent never reports less than 1 GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_tokenize(card: str, manifest: str, out: str) -> None:
    from anygpt.jobs.tokenize_media import tokenize_manifest

    t0 = time.perf_counter()
    res = tokenize_manifest(card, out, manifest=manifest, shard_size=1000, batch_size=16, progress=False, device="cpu")
    dt = time.perf_counter() - t0
    assert res.merged and res.errors == 0, res
    print(json.dumps({"seconds": dt, "items": res.items, "workers": res.workers, "rss_mb": _peak_rss_mb(),
                      "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def _loader_set() -> object:
    """500 samples of 40–300 tokens in the training set format (what build-data writes)."""
    from datasets import Dataset

    rng = random.Random(3)
    ids = [[rng.randrange(3, 1000) for _ in range(rng.randint(40, 300))] for _ in range(500)]
    return Dataset.from_dict({"input_ids": ids, "labels": ids, "modality": ["speech"] * 500,
                              "direction": ["x2t"] * 500, "length": [len(x) for x in ids]})


def _child(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode:
        sys.exit(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenize", default="1000,10000", help="tokenize job sizes (items)")
    ap.add_argument("--build", default="10000,100000", help="build-data sizes (samples)")
    ap.add_argument("--num-proc", default="1", help="build-data processes; a list (1,2) runs each size with each")
    ap.add_argument("--loader", default="1,20,200", help="loader: numbers of dataset shards")
    ap.add_argument("--batches", type=int, default=200)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sizes = [int(x) for x in args.tokenize.split(",") if x]
        if sizes:
            from anygpt.modality.kmeans_tokenizer import KMeansImageTokenizer

            manifest = _pictures(tmp / "pictures", max(sizes))
            KMeansImageTokenizer.fit(manifest, tmp / "image_tok", codebook_size=64, iters=5)
            lines = manifest.read_text().splitlines(keepends=True)
            for n in sizes:
                (manifest.parent / f"m{n}.jsonl").write_text("".join(lines[:n]))  # paths are relative to it
                r = _child(["--child-tokenize", str(tmp / "image_tok"), str(manifest.parent / f"m{n}.jsonl"),
                            str(tmp / f"codes{n}")])
                results.append({"stage": "tokenize", "size": n, "workers": r["workers"],
                                "us_per_item": round(r["seconds"] / n * 1e6, 1), "items_per_s": round(n / r["seconds"]),
                                "peak_rss_mb": round(r["rss_mb"]), "worker_peak_rss_mb": round(r["worker_rss_mb"])})
                print(json.dumps(results[-1]), flush=True)
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
        small = _loader_set()
        for k in [int(x) for x in args.loader.split(",") if x]:
            dirs = []
            for i in range(k):
                dirs.append(str(tmp / f"shard{k}_{i}"))
                small.save_to_disk(dirs[-1])
            r = _child(["--child-loader", str(args.batches), *dirs])
            results.append({"stage": "loader", "size": k, "us_per_batch": round(r["seconds"] / args.batches * 1e6, 1),
                            "open_s": round(r["open_seconds"], 2), "first_batch_and_plan_s": round(r["plan_seconds"], 2),
                            "peak_rss_mb": round(r["rss_mb"])})
            print(json.dumps(results[-1]), flush=True)
    first_procs = int(args.num_proc.split(",")[0])
    for stage in ("tokenize", "build-data", "loader"):
        rs = [r for r in results if r["stage"] == stage and r.get("num_proc", first_procs) == first_procs]
        if len(rs) > 1:
            key = "us_per_batch" if stage == "loader" else "us_per_item"
            print(json.dumps({"stage": stage, "sizes": [r["size"] for r in rs],
                              "time_per_item_vs_smallest": [round(r[key] / rs[0][key], 2) for r in rs],
                              "peak_rss_mb": [r["peak_rss_mb"] for r in rs]}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-tokenize":
        child_tokenize(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-build":
        child_build(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-loader":
        child_loader(sys.argv[3:], int(sys.argv[2]))
    else:
        main()
