"""Step-time overhead of our training step vs the bare model step on the same batches.

Ours: the DeepSpeed engine (ZeRO-2, world size 1, fp32, ``torch_adam``: torch's AdamW, gradient
clipping at the recipe's 1.0) with the block-diagonal packing mask, our per-token loss and the
per-modality/direction metric accumulation. Baseline, like for like: the same model, batches,
precision (fp32), optimizer implementation (``torch.optim.AdamW``, same settings) and clipping
(``clip_grad_norm_`` at 1.0), as a plain ``loss.backward(); clip; step`` with the model's own loss
(no packing mask). Ratio = ours / bare, one thread, tiny Llama.

Time is the process's CPU time (``time.process_time``), the median of interleaved repeats: on a
shared machine wall time measures the neighbours as much as the step.

    python bench/train_step_overhead.py
"""

from __future__ import annotations

import json
import statistics
import time

import torch


def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=448, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=512))


def batches(n: int):
    from anygpt.data.packing import Sample, collate_rows, plan_rows

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 300, (n * 16,), generator=g).tolist()
    samples = [Sample(torch.randint(3, 440, (k,), generator=g).tolist(), torch.randint(3, 440, (k,), generator=g).tolist(),
                      0, i % 3, i % 2) for i, k in enumerate(lengths)]
    rows = plan_rows(lengths, 512, pack=True)
    return [collate_rows([[samples[i] for i in r] for r in rows[b * 4:(b + 1) * 4]], 512, 0) for b in range(n)]


def timed(step, data, warmup: int = 2) -> float:
    """CPU seconds per step over ``data`` after ``warmup`` steps."""
    for b in data[:warmup]:
        step(b)
    t0 = time.process_time()
    for b in data[warmup:]:
        step(b)
    return (time.process_time() - t0) / (len(data) - warmup)


def main() -> None:
    import deepspeed

    from anygpt.data.packing import model_inputs
    from anygpt.train.config import TrainConfig
    from anygpt.train.distributed import init_distributed
    from anygpt.train.loop import deepspeed_config
    from anygpt.model.loss import token_losses
    from anygpt.train.metrics import GroupedLoss

    torch.set_num_threads(1)
    init_distributed()
    data = batches(8)

    cfg = TrainConfig()
    cfg.deepspeed.precision, cfg.deepspeed.zero_stage, cfg.deepspeed.micro_batch_size, cfg.deepspeed.grad_accum = "fp32", 2, 4, 1
    conf = deepspeed_config(cfg, 1, False)
    assert conf["optimizer"]["params"]["torch_adam"] and conf["gradient_clipping"] == cfg.optim.grad_clip
    o = cfg.optim

    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)

    def bare(b):
        model(input_ids=b["input_ids"], labels=b["labels"]).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    ds_model = tiny_model()
    engine, *_ = deepspeed.initialize(model=ds_model, model_parameters=ds_model.parameters(), config=conf)
    acc = GroupedLoss({"modality": ["image", "speech", "music"], "direction": ["t2x", "x2t"], "dataset": ["d"]})

    def ours(b):
        logits = engine(**model_inputs(b, torch.float32), use_cache=False).logits
        loss_tok, valid = token_losses(logits, b["labels"])
        engine.backward(loss_tok.sum() / valid.sum())
        engine.step()
        acc.add(loss_tok, valid, b)

    # interleaved repeats, median: a busy machine hurts both alike
    runs = [(timed(bare, data), timed(ours, data)) for _ in range(5)]
    t_bare, t_ours = (statistics.median(r[i] for r in runs) for i in (0, 1))
    print(f"bare step {t_bare * 1e3:.1f} ms; ours {t_ours * 1e3:.1f} ms CPU time "
          f"(batch 4 x 512 packed tokens, 1.2M params, 1 thread, fp32, AdamW, clip {o.grad_clip})")
    print(json.dumps({"bench": "train_step_overhead", "ours": round(t_ours * 1e3, 2), "baseline": round(t_bare * 1e3, 2),
                      "ratio": round(t_ours / t_bare, 3), "unit": "ms/step", "better": "lower"}))


if __name__ == "__main__":
    main()
