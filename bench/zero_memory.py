"""Peak memory per rank by ZeRO stage: two-process CPU runs of `anygpt train` (gloo, torch AdamW,
the same model, data, batch and steps for every stage) on an 8 x 1024-hidden Llama (~106M
parameters), in the training default precision, bf16 with fp32 master weights.

What each rank holds for N parameters: stage 0 everything, bf16 weights and gradients + fp32
master weights and gradients + two fp32 Adam moments (20 N bytes, ~2.1 GB here); stage 3 a 1/2
share of the fp32 master weights, gradients and moments plus its bf16 share (9 N bytes, ~1.0 GB),
with one layer's parameters gathered at a time. Both also hold the same ~0.9 GB of interpreter,
libraries and data, so the ratio of peaks is above the ratio of model state.

Peak = max RSS of the busiest rank on CPU (GPU: max allocated), read from metrics.jsonl.
Baseline = stage 0 (everything replicated); ours = stage 3 (params, grads and optimizer state partitioned).

    python bench/zero_memory.py [--stages 0,1,2,3] [--precision bf16|fp32]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import yaml

WORDS = "the a red blue circle square piano slow fast happy sad one two three image speech music".split()


def setup(tmp: Path) -> dict:
    from datasets import Dataset

    from bench._support import grown_tokenizer_dir, tiny_base_tokenizer

    tok = tiny_base_tokenizer(tmp, WORDS)
    _, layout = grown_tokenizer_dir(tmp, tok, "default", {"image": 1024, "speech": 1024, "music": 0})
    rng = random.Random(0)
    codes = layout.code_range("image")
    ids = [[1] + [codes.start + rng.randrange(len(codes)) for _ in range(rng.randint(20, 120))] + [2] for _ in range(200)]
    Dataset.from_dict({"input_ids": ids, "labels": ids, "modality": ["image"] * 200, "direction": ["x2t"] * 200,
                       "length": [len(x) for x in ids]}).save_to_disk(str(tmp / "data"))
    return {"tokenizer": str(tmp / "tok"), "train": [str(tmp / "data")]}


def peak_for_stage(tmp: Path, data: dict, stage: int, precision: str) -> float:
    from anygpt.train.launch import launch

    recipe = {"out_dir": str(tmp / f"z{stage}"), "steps": 2,
              "model": {"tokenizer": data["tokenizer"], "from_config": {"hidden_size": 1024, "intermediate_size": 2816,
                        "num_hidden_layers": 8, "num_attention_heads": 8, "max_position_embeddings": 256}},
              "data": {"train": data["train"], "seq_len": 128},
              "deepspeed": {"zero_stage": stage, "precision": precision, "micro_batch_size": 1, "grad_accum": 1},
              "log": {"every": 1, "tensorboard": False}, "export": {"enabled": False}}
    path = tmp / f"z{stage}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = launch(path, nproc=2, timeout=1800)  # a loaded 2-core machine is slow
    if proc.returncode != 0:
        sys.exit(f"stage {stage} failed:\n{proc.stderr[-3000:]}")
    recs = [json.loads(x) for x in (tmp / f"z{stage}" / "metrics.jsonl").read_text().splitlines()]
    return recs[-1]["peak_mem_mb"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", default="0,3")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    args = ap.parse_args()
    stages = [int(s) for s in args.stages.split(",")]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = setup(tmp)
        peaks = {s: peak_for_stage(tmp, data, s, args.precision) for s in sorted(set(stages) | {0})}
    for s, mb in peaks.items():
        print(f"ZeRO-{s}: peak {mb:.0f} MB per rank (2 ranks, {args.precision})")
    top = max(peaks)
    print(json.dumps({"bench": "zero_memory", "ours": round(peaks[top], 1), "baseline": round(peaks[0], 1),
                      "ratio": round(peaks[top] / peaks[0], 3), "unit": f"MB peak per rank, ZeRO-{top} vs ZeRO-0, {args.precision}",
                      "better": "lower", "by_stage": {str(k): round(v, 1) for k, v in peaks.items()}}))


if __name__ == "__main__":
    main()
