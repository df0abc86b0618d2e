"""GPU benchmarks (never needed for tests or CI): one short script for a machine with one GPU,
under its own time guard (``--time-limit``, default 420 s; an H200 needs about 3–5 minutes).

1. Tokenize throughput (items/s and audio-seconds/s) of EnCodec-32k (facebook/encodec_32khz
   architecture) and SpeechTokenizer (fnlp's architecture), both with random weights, through the
   tokenize job (its default reader processes) on the GPU in bf16 (the card's ``dtype``).
2. Training: a ~1B Llama (16 × 2048, from scratch, random weights) trained with `anygpt train`
   under ZeRO-2 in bf16 on packed 4,096-token rows (flash-attention-2 varlen on ``position_ids``
   when ``flash_attn`` is installed, else SDPA with the block-diagonal mask); tokens/s and MFU
   after warm-up steps.

MFU = model FLOPs per second / the GPU's dense bf16 peak. Model FLOPs per step =
6 · N · tokens (N: parameters less the input embedding, whose lookup is no matmul; the output
head is counted) + attention: causal, within each packed sample, 6 · layers · hidden · L² per
sample of L tokens (forward QKᵀ and AV, backward twice that; half of the L×L matrix), here
as tokens · 6 · layers · hidden · E[L²]/E[L] over the data set's samples. Recomputation by
gradient checkpointing is not counted (that would be hardware FLOPs), and it is off. The peak
comes from the trainer's table by device name (``anygpt.train.metrics.default_peak_flops``:
H100/H200 989 TFLOP/s) or ``--peak-flops``.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python bench/gpu/run_gpu.py --out gpu.json [--steps 40] [--skip-train] [--skip-tokenize]
    PYTHONPATH=. python bench/gpu/run_gpu.py --smoke --out smoke.json   # tiny model and codecs: does it run (CPU)

Prints one JSON line per measurement and writes them all to ``--out``; record them in
bench/README.md with the date and the GPU.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
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
MODEL_1B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16, "num_attention_heads": 16,
            "num_key_value_heads": 16, "max_position_embeddings": 4096}
MODEL_SMOKE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "max_position_embeddings": 4096}


class Deadline:
    """The script's time guard: seconds left of ``limit`` from construction."""

    def __init__(self, limit: float) -> None:
        self.end = time.monotonic() + limit

    def left(self) -> float:
        return self.end - time.monotonic()


def model_flops_per_token(spec: dict, vocab: int, mean_sq_over_mean: float) -> tuple[float, int, int]:
    """``(training FLOPs per token, N, N counted)`` for a Llama of ``spec`` (see the module
    docstring); parameters counted on the meta device, exactly as the trainer builds the model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, tie_word_embeddings=False, **spec))
    n = sum(p.numel() for p in model.parameters())
    counted = n - model.get_input_embeddings().weight.numel()
    attention = 6 * spec["num_hidden_layers"] * spec["hidden_size"] * mean_sq_over_mean
    return 6 * counted + attention, n, counted


def train_bench(tmp: Path, steps: int, peak_flops: float | None, deadline: Deadline, smoke: bool = False) -> dict:
    import importlib.util

    import numpy as np
    import torch
    from datasets import Dataset

    from anygpt.train.launch import launch
    from anygpt.train.metrics import default_peak_flops
    from bench._support import grown_tokenizer_dir, tiny_base_tokenizer

    words = "the a red blue circle square piano slow fast happy sad one two three image speech music".split()
    _, layout = grown_tokenizer_dir(tmp, tiny_base_tokenizer(tmp, words))
    rng = random.Random(0)
    codes = layout.code_range("speech")
    n = 400 if smoke else 1500  # 1,500 samples of 200–2,000 tokens: ~400 packed rows, more than the steps use
    ids = [[1] + [codes.start + rng.randrange(len(codes)) for _ in range(rng.randint(200, 2000))] + [2] for _ in range(n)]
    lengths = np.array([len(x) for x in ids], dtype=np.float64)
    Dataset.from_dict({"input_ids": ids, "labels": ids, "modality": ["speech"] * n, "direction": ["x2t"] * n,
                       "length": lengths.astype(int).tolist()}).save_to_disk(str(tmp / "data"))
    cuda = torch.cuda.is_available()
    flash = importlib.util.find_spec("flash_attn") is not None and cuda
    spec = MODEL_SMOKE if smoke else MODEL_1B
    recipe = {"out_dir": str(tmp / "run"), "steps": steps,
              "model": {"tokenizer": str(tmp / "tok"), "attn_implementation": "flash_attention_2" if flash else "sdpa",
                        "gradient_checkpointing": False, "from_config": dict(spec)},
              "data": {"train": [str(tmp / "data")], "seq_len": 4096, "pack": True,
                       "attention": "position_ids" if flash else "mask"},
              "deepspeed": {"zero_stage": 2, "precision": "bf16" if cuda and not smoke else "fp32",
                            "micro_batch_size": 1, "grad_accum": 1},
              "log": {"every": 1, "tensorboard": False},
              "export": {"enabled": False}}
    (tmp / "train.yaml").write_text(yaml.safe_dump(recipe))
    peak = peak_flops or default_peak_flops()
    per_token, n_params, counted = model_flops_per_token(spec, layout.padded_vocab_size,
                                                         float((lengths ** 2).sum() / lengths.sum()))
    budget = deadline.left() - 10
    if budget < 60:
        return {"bench": "gpu_train_1b_zero2", "skipped": f"only {budget:.0f} s left of --time-limit"}
    t0 = time.time()
    try:
        proc = launch(tmp / "train.yaml", nproc=1, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"bench": "gpu_train_1b_zero2", "failed": f"training ran past the time guard ({budget:.0f} s)"}
    if proc.returncode != 0:
        return {"bench": "gpu_train_1b_zero2", "failed": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
    recs = [json.loads(x) for x in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    recs = [r for r in recs if "tokens_per_s" in r]
    late = recs[len(recs) // 3:] or recs  # after warm-up (allocator, kernels, first steps)
    # one log per step of ~equal tokens: the rate over those steps is the harmonic mean of the rates
    tps = len(late) / sum(1.0 / r["tokens_per_s"] for r in late)
    return {"bench": "gpu_train_1b_zero2", "gpu": torch.cuda.get_device_name(0) if cuda else "none (CPU)",
            "params": n_params, "params_counted": counted, "attention": recipe["data"]["attention"],
            "attn_implementation": recipe["model"]["attn_implementation"], "precision": recipe["deepspeed"]["precision"],
            "steps": steps, "steps_averaged": len(late), "tokens_per_s": round(tps, 1),
            "model_flops_per_token": round(per_token), "peak_flops": peak, "mfu": round(tps * per_token / peak, 4),
            "trainer_mfu_6n": round(sum(r["mfu"] for r in late) / len(late), 4),
            "peak_mem_mb": recs[-1].get("peak_mem_mb"), "wall_s": round(time.time() - t0, 1)}


def tokenize_bench(tmp: Path, items: int, seconds: float, deadline: Deadline, smoke: bool = False) -> list[dict]:
    import soundfile as sf
    import torch

    from anygpt.jobs.tokenize_media import tokenize_manifest
    from anygpt.modality import testing
    from anygpt.modality.base import load_tokenizer

    out = []
    codecs = {
        "encodec_32khz": (lambda d: testing.save_random_encodec_hf(d, small=smoke), "encodec-hf", "music", 32000),
        "speechtokenizer": (lambda d: testing.save_random_speechtokenizer(d, None if smoke else FULL_SPEECHTOKENIZER),
                            "speechtokenizer", "speech", 16000),
    }
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, (save, backend, modality, sr) in codecs.items():
        if deadline.left() < 60:
            out.append({"bench": f"gpu_tokenize_{name}", "skipped": "time guard"})
            continue
        root = tmp / name
        save(root / "model")
        card = root / "card.yaml"
        card.write_text(yaml.safe_dump({"backend": backend, "modality": modality, "path": "model", "dtype": "bfloat16"}))
        rows = []
        for i, wav in enumerate(testing.audio_corpus(sr, items, seconds, seed=1)):
            sf.write(root / f"a{i}.wav", wav, sr)
            rows.append(json.dumps({"id": f"a{i}", "path": f"a{i}.wav"}))
        (root / "m.jsonl").write_text("\n".join(rows) + "\n")
        (root / "warm.jsonl").write_text("\n".join(rows[:16]) + "\n")
        tok = load_tokenizer(card, device=device)
        tokenize_manifest(card, root / "warm", manifest=root / "warm.jsonl", batch_size=16, shard_size=items,
                          progress=False, tokenizer=tok)  # kernels, allocator, cuDNN choices out of the timing
        if device == "cuda":
            torch.cuda.synchronize()
        res = tokenize_manifest(card, root / "out", manifest=root / "m.jsonl", batch_size=16, shard_size=items,
                                progress=False, tokenizer=tok)
        out.append({"bench": f"gpu_tokenize_{name}", "device": tok.device, "dtype": "bfloat16" if device == "cuda" else "float32",
                    "items": res.items, "errors": res.errors, "seconds_per_item": seconds, "workers": res.workers,
                    "items_per_s": round(res.read_now / res.seconds, 2),
                    "audio_s_per_s": round(res.audio_seconds / res.seconds, 1)})
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file for the results (a list of objects)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--peak-flops", type=float, help="the GPU's dense bf16 peak FLOP/s (default: by device name)")
    ap.add_argument("--items", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length for the tokenize runs")
    ap.add_argument("--time-limit", type=float,
                    help="seconds for the whole script (default 420; 1800 with --smoke: a shared CPU is slow)")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--skip-tokenize", action="store_true")
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny model in fp32, small codecs, 4 one-second clips, 2 steps: checks the script runs (CPU)")
    args = ap.parse_args()
    if args.smoke:
        args.items, args.seconds, args.steps = 4, 1.0, 2
    deadline = Deadline(args.time_limit or (1800.0 if args.smoke else 420.0))
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_tokenize:
            results += tokenize_bench(tmp, args.items, args.seconds, deadline, args.smoke)
        if not args.skip_train:
            (tmp / "train").mkdir()
            results.append(train_bench(tmp / "train", args.steps, args.peak_flops, deadline, args.smoke))
            print(json.dumps(results[-1]), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    if any("failed" in r for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
