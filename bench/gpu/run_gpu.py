"""GPU benchmarks (never needed for tests or CI): one short script for a machine with one GPU.

1. Training: a ~1.1B Llama (16 x 2048, from scratch, random weights) trained with `anygpt train`
   under ZeRO-2 in bf16 on packed 4,096-token rows; prints tokens/s and MFU (6·N·tokens/s over
   the card's peak bf16 FLOP/s, ``--peak-flops`` to override) averaged after warm-up steps.
   Attention: flash-attention-2 varlen on ``position_ids`` when ``flash_attn`` is installed,
   else SDPA with the block-diagonal mask.
2. Tokenize throughput (items/s and audio-seconds/s) of EnCodec-32k (facebook/encodec_32khz
   architecture) and SpeechTokenizer (fnlp's architecture), both with random weights, through
   the tokenize job on the GPU in bf16.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python bench/gpu/run_gpu.py [--steps 30] [--skip-train] [--skip-tokenize]
    PYTHONPATH=. python bench/gpu/run_gpu.py --smoke --steps 2 --skip-tokenize   # does it run (CPU)

Prints one JSON line per measurement; record them in bench/README.md with the date and the GPU.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

FULL_SPEECHTOKENIZER = {"n_filters": 64, "strides": [8, 5, 4, 2], "dimension": 1024, "semantic_dimension": 768,
                        "bidirectional": True, "dilation_base": 2, "residual_kernel_size": 3, "n_residual_layers": 1,
                        "lstm_layers": 2, "activation": "ELU", "sample_rate": 16000, "codebook_size": 1024, "n_q": 8}


def train_bench(tmp: Path, steps: int, peak_flops: float | None, smoke: bool = False) -> dict:
    import importlib.util

    import torch
    from datasets import Dataset

    from anygpt.train.launch import launch
    from bench._support import grown_tokenizer_dir, tiny_base_tokenizer

    words = "the a red blue circle square piano slow fast happy sad one two three image speech music".split()
    _, layout = grown_tokenizer_dir(tmp, tiny_base_tokenizer(tmp, words))
    rng = random.Random(0)
    codes = layout.code_range("speech")
    n = 4000
    ids = [[1] + [codes.start + rng.randrange(len(codes)) for _ in range(rng.randint(200, 2000))] + [2] for _ in range(n)]
    Dataset.from_dict({"input_ids": ids, "labels": ids, "modality": ["speech"] * n, "direction": ["x2t"] * n,
                       "length": [len(x) for x in ids]}).save_to_disk(str(tmp / "data"))
    flash = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    recipe = {"out_dir": str(tmp / "run"), "steps": steps,
              "model": {"tokenizer": str(tmp / "tok"), "attn_implementation": "flash_attention_2" if flash else "sdpa",
                        "gradient_checkpointing": True,
                        "from_config": ({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                         "num_attention_heads": 4, "max_position_embeddings": 4096} if smoke else
                                        {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16,
                                         "num_attention_heads": 16, "num_key_value_heads": 16,
                                         "max_position_embeddings": 4096})},
              "data": {"train": [str(tmp / "data")], "seq_len": 4096, "pack": True,
                       "attention": "position_ids" if flash else "mask"},
              "deepspeed": {"zero_stage": 2, "precision": "fp32" if smoke else "bf16", "micro_batch_size": 1,
                            "grad_accum": 1},
              "log": {"every": 1, "tensorboard": False, **({"peak_flops": peak_flops} if peak_flops else {})},
              "export": {"enabled": False}}
    (tmp / "train.yaml").write_text(yaml.safe_dump(recipe))
    t0 = time.time()
    proc = launch(tmp / "train.yaml", nproc=1, timeout=1500)
    if proc.returncode != 0:
        sys.exit(f"training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    recs = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "tokens_per_s" in r]
    late = recs[len(recs) // 3:] or recs  # after warm-up (allocator, kernels, first steps)
    return {"bench": "gpu_train_1b_zero2", "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "attention": recipe["data"]["attention"], "attn_implementation": recipe["model"]["attn_implementation"],
            "steps": steps, "tokens_per_s": round(sum(r["tokens_per_s"] for r in late) / len(late), 1),
            "mfu": round(sum(r["mfu"] for r in late) / len(late), 4), "peak_mem_mb": recs[-1]["peak_mem_mb"],
            "wall_s": round(time.time() - t0, 1)}


def tokenize_bench(tmp: Path, items: int, seconds: float) -> list[dict]:
    import soundfile as sf
    import torch

    from anygpt.modality import testing
    from anygpt.modality.base import load_tokenizer
    from anygpt.jobs.tokenize_media import tokenize_manifest

    out = []
    codecs = {
        "encodec_32khz": (lambda d: testing.save_random_encodec_hf(d, small=False), "encodec-hf", "music", 32000),
        "speechtokenizer": (lambda d: testing.save_random_speechtokenizer(d, FULL_SPEECHTOKENIZER), "speechtokenizer",
                            "speech", 16000),
    }
    for name, (save, backend, modality, sr) in codecs.items():
        root = tmp / name
        save(root / "model")
        card = root / "card.yaml"
        card.write_text(yaml.safe_dump({"backend": backend, "modality": modality, "path": "model", "dtype": "bfloat16"}))
        rows = []
        for i, wav in enumerate(testing.audio_corpus(sr, items, seconds, seed=1)):
            sf.write(root / f"a{i}.wav", wav, sr)
            rows.append(json.dumps({"id": f"a{i}", "path": f"a{i}.wav"}))
        (root / "m.jsonl").write_text("\n".join(rows) + "\n")
        tok = load_tokenizer(card, device="cuda" if torch.cuda.is_available() else "cpu")
        tokenize_manifest(card, root / "warm", manifest=root / "m.jsonl", batch_size=16, shard_size=items,
                          progress=False, tokenizer=tok)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = tokenize_manifest(card, root / "out", manifest=root / "m.jsonl", batch_size=16, shard_size=items,
                                progress=False, tokenizer=tok)
        dt = time.perf_counter() - t0
        out.append({"bench": f"gpu_tokenize_{name}", "device": tok.device, "items": res.items, "errors": res.errors,
                    "items_per_s": round(res.items / dt, 2), "audio_s_per_s": round(res.items * seconds / dt, 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--peak-flops", type=float, help="the card's peak bf16 FLOP/s (default: the trainer's table)")
    ap.add_argument("--items", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length for the tokenize runs")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-tokenize", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="a tiny model in fp32: checks the script runs (CPU is fine)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_tokenize:
            for r in tokenize_bench(tmp, args.items, args.seconds):
                print(json.dumps(r), flush=True)
        if not args.skip_train:
            (tmp / "train").mkdir()
            print(json.dumps(train_bench(tmp / "train", args.steps, args.peak_flops, args.smoke)), flush=True)


if __name__ == "__main__":
    main()
