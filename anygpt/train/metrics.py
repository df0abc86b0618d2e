"""Training metrics: per-token losses grouped by modality / direction / dataset, throughput, MFU;
written to the console (rank 0), ``metrics.jsonl`` and TensorBoard, plotted as ``loss.png``.

MFU = 6 · N · tokens/s / (peak FLOP/s per device · devices), N = trainable + frozen parameters
(the 6N rule counts forward and backward; attention FLOPs are left out). Default peaks, dense,
no sparsity: H100 bf16 989 TFLOP/s, A100 bf16 312 TFLOP/s, other GPUs 100 TFLOP/s, CPU 1 TFLOP/s
(a stated guess; set ``log.peak_flops`` for your hardware).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist

from anygpt.utils import append_jsonl, read_jsonl

log = logging.getLogger(__name__)


def default_peak_flops() -> float:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        if "H100" in name or "H200" in name:
            return 989e12
        if "A100" in name:
            return 312e12
        return 100e12
    return 1e12


class GroupedLoss:
    """Sums of loss and token counts per group name, reduced over ranks on ``read``."""

    def __init__(self, groups: dict[str, list[str]]):
        # groups: kind ("modality"/"direction"/"dataset") -> names, indexed by the batch's *_ids
        self.groups = groups
        self.names = [f"{kind}/{n or '-'}" for kind, ns in groups.items() for n in ns]
        # slots: one per group name, the overall total, and a bin for positions of no group
        self.sums = torch.zeros(len(self.names) + 2, dtype=torch.float64)
        self.counts = torch.zeros(len(self.names) + 2, dtype=torch.float64)

    def add(self, loss: torch.Tensor, valid: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Accumulate one batch where the loss lives (no copy to the host, no sync: this runs every
        step); ``read`` brings the sums over."""
        loss = loss.detach().double()
        dev = loss.device
        if self.sums.device != dev:
            self.sums, self.counts = self.sums.to(dev), self.counts.to(dev)
        valid = valid.to(dev)
        total, no_group = len(self.names), len(self.names) + 1
        slots, off = [], 0
        for kind, ns in self.groups.items():
            ids = batch[f"{kind}_ids"][:, 1:].to(dev, non_blocking=True)  # the label position's tag
            known = valid & (ids >= 0) & (ids < len(ns))
            slots.append(torch.where(known, ids + off, no_group))
            off += len(ns)
        slots.append(torch.where(valid, total, no_group))
        idx = torch.stack(slots).reshape(-1)
        w = valid.to(torch.float64).expand(len(slots), *valid.shape).reshape(-1)
        self.sums.index_add_(0, idx, loss.expand(len(slots), *loss.shape).reshape(-1))
        self.counts.index_add_(0, idx, w)

    def read(self) -> dict[str, float]:
        """All-reduced mean loss per group and ``loss`` overall; resets the sums."""
        both = torch.stack([self.sums[:-1], self.counts[:-1]])
        if dist.is_initialized():
            dist.all_reduce(both)
        both = both.cpu()
        out = {n: float(s / c) for n, s, c in zip(self.names + ["loss"], both[0], both[1]) if c > 0}
        self.sums.zero_()
        self.counts.zero_()
        return out


class MetricsLog:
    """Console + JSONL + (optional) TensorBoard writer; only rank 0 writes."""

    def __init__(self, out_dir: Path, rank: int, tensorboard: bool = True):
        self.rank = rank
        self.path = out_dir / "metrics.jsonl"
        self.tb = None
        if rank == 0 and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                log.info("tensorboard not installed: metrics go to metrics.jsonl only")
        self.t0 = time.time()

    def write(self, step: int, values: dict[str, float], split: str = "train") -> None:
        if self.rank != 0:
            return
        rec = {"step": step, "split": split, "time": round(time.time() - self.t0, 3), **values}
        append_jsonl(self.path, rec)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{split}/{k}", v, step)
        shown = " ".join(f"{k} {v:.4g}" for k, v in values.items() if k in ("loss", "lr", "tokens_per_s", "mfu") or split != "train")
        log.info(f"[{split}] step {step}: {shown}")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_losses(metrics_jsonl: Path, out_png: Path) -> Path | None:
    """Loss curves (overall and per group, train and validation) from ``metrics.jsonl``."""
    if not metrics_jsonl.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list, list]] = {}
    for _, rec in read_jsonl(metrics_jsonl):
        for k, v in rec.items():
            if k == "loss" or k.startswith(("modality/", "direction/", "dataset/")):
                xs, ys = series.setdefault(f"{rec['split']} {k}", ([], []))
                xs.append(rec["step"])
                ys.append(v)
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, label=name, lw=2 if name.endswith(" loss") else 1, marker="o" if name.startswith("val") else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
