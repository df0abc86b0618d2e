"""Benchmark: the tokenize job's items/s with batched encoding vs one item at a time.

Same codec (a small random-init EnCodec 32 kHz in the facebook/encodec_32khz layout, loaded
through its card), same manifest of wav files, same job code; only ``batch_size`` differs.
Run: python bench/tokenize_batched_vs_single.py [--items 32] [--batch-size 8]
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
    ap.add_argument("--seconds", type=float, default=1.0, help="clip length")
    args = ap.parse_args()

    import soundfile as sf
    import yaml

    from anygpt.modality import testing
    from anygpt.modality.base import load_tokenizer
    from anygpt.jobs.tokenize_media import tokenize_manifest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        testing.save_random_encodec_hf(root / "encodec_32khz")
        card = root / "card.yaml"
        card.write_text(yaml.safe_dump({"backend": "encodec-hf", "modality": "music", "path": "encodec_32khz"}))
        rows = []
        for i, wav in enumerate(testing.audio_corpus(32000, args.items, args.seconds, seed=1)):
            sf.write(root / f"a{i}.wav", wav, 32000)
            rows.append(json.dumps({"id": f"a{i}", "path": f"a{i}.wav"}))
        (root / "m.jsonl").write_text("\n".join(rows) + "\n")

        tok = load_tokenizer(card)  # loaded once: only the job's encoding loop is timed
        tok.fingerprint

        def run(batch_size: int, out: str) -> float:
            t = time.perf_counter()
            res = tokenize_manifest(card, root / out, manifest=root / "m.jsonl", batch_size=batch_size,
                                    shard_size=args.items, progress=False, tokenizer=tok)
            assert res.errors == 0 and res.items == args.items
            return args.items / (time.perf_counter() - t)

        run(args.batch_size, "warmup")  # model load + first-call costs out of the timing
        single = run(1, "single")
        batched = run(args.batch_size, "batched")
    print(f"batched (batch {args.batch_size}): {batched:.2f} items/s; one at a time: {single:.2f} items/s", file=sys.stderr)
    print(json.dumps({"bench": "tokenize_batched_vs_single", "ours": round(batched, 3), "baseline": round(single, 3),
                      "ratio": round(batched / single, 3), "unit": "items/s", "better": "higher"}))


if __name__ == "__main__":
    main()
