"""Benchmark: the tokenize job's items/s batched (batch 8, media read by worker processes, batches
sorted by length) vs one item at a time read in the main process.

Same codec (a small random-init EnCodec 32 kHz in the facebook/encodec_32khz layout, loaded
through its card), same manifest, same job code; only ``batch_size`` and ``workers`` differ. The
media are what music tokenizing reads in practice: 44.1 kHz stereo FLAC of varied length (0.5–1.5×
``--seconds``), so each item is decoded, downmixed and resampled to 32 kHz before the codec sees it.
Also printed: the share of codes equal to the one-at-a-time run (zero padding in a batch reaches
the last frames of a shorter item through the codec's receptive field; sorting by length keeps
it small).
Each is run twice (single, batched, batched, single) and the times summed.
Run: python bench/tokenize_batched_vs_single.py [--items 24] [--batch-size 8] [--workers N]
Last line: {"bench": "tokenize_batched_vs_single", "ours": batched items/s, "baseline": single items/s, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="reader processes for the batched run (default: the job's)")
    ap.add_argument("--seconds", type=float, default=1.0, help="mean clip length")
    args = ap.parse_args()

    import numpy as np
    import pyarrow.parquet as pq
    import soundfile as sf
    import yaml

    from anygpt.jobs.media_reader import default_workers
    from anygpt.jobs.tokenize_media import tokenize_manifest
    from anygpt.modality import testing
    from anygpt.modality.base import load_tokenizer

    workers = default_workers() if args.workers is None else args.workers
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        testing.save_random_encodec_hf(root / "encodec_32khz")
        card = root / "card.yaml"
        card.write_text(yaml.safe_dump({"backend": "encodec-hf", "modality": "music", "path": "encodec_32khz"}))
        rows = []
        for i, wav in enumerate(testing.audio_corpus(44100, args.items, 1.5 * args.seconds, seed=1)):
            n = int(44100 * args.seconds * rng.uniform(0.5, 1.5))
            stereo = np.stack([wav[:n], 0.8 * wav[:n]], axis=1)
            sf.write(root / f"a{i}.flac", stereo, 44100)
            rows.append(json.dumps({"id": f"a{i}", "path": f"a{i}.flac"}))
        (root / "m.jsonl").write_text("\n".join(rows) + "\n")

        tok = load_tokenizer(card)  # loaded once: only the job's reading and encoding are timed
        tok.fingerprint

        def run(batch_size: int, n_workers: int, out: str) -> tuple[float, float]:
            t = time.perf_counter()
            res = tokenize_manifest(card, root / out, manifest=root / "m.jsonl", batch_size=batch_size,
                                    shard_size=args.items, progress=False, tokenizer=tok, workers=n_workers)
            assert res.errors == 0 and res.items == args.items
            return time.perf_counter() - t, res.audio_seconds

        run(args.batch_size, workers, "warmup")  # first-call costs out of the timing
        # single, batched, batched, single: a load that drifts during the run weighs on both alike
        times = {"single": 0.0, "batched": 0.0}
        for n, name in enumerate(("single", "batched", "batched", "single")):
            dt, audio = run(1, 0, f"{name}{n}") if name == "single" else run(args.batch_size, workers, f"{name}{n}")
            times[name] += dt
        single, batched = 2 * args.items / times["single"], 2 * args.items / times["batched"]
        single_audio, batched_audio = 2 * audio / times["single"], 2 * audio / times["batched"]
        codes = {name: {r["id"]: r["codes"] for r in pq.read_table(root / f"{name}{n}" / "shard-00000.parquet").to_pylist()}
                 for name, n in (("single", 0), ("batched", 1))}
        same = [np.mean(np.asarray(codes["batched"][i]) == np.asarray(c)) for i, c in codes["single"].items()]
    print(f"batched (batch {args.batch_size}, {workers} reader process(es)): {batched:.2f} items/s, "
          f"{batched_audio:.1f} audio-s/s; one at a time: {single:.2f} items/s, {single_audio:.1f} audio-s/s; "
          f"codes equal to one at a time: {np.mean(same):.1%} (worst item {min(same):.1%})", file=sys.stderr)
    print(json.dumps({"bench": "tokenize_batched_vs_single", "ours": round(batched, 3), "baseline": round(single, 3),
                      "ratio": round(batched / single, 3), "unit": "items/s", "better": "higher"}))


if __name__ == "__main__":
    main()
