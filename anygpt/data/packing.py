"""Packing samples into fixed-length rows (and plain padding, for comparison).

A *row* is a list of samples laid side by side. Packing keeps each sample whole (first fit over a
small window of open rows; a sample longer than the row is truncated), so attention can be
isolated per sample exactly:

* ``position_ids`` restart at 0 at each sample start (what flash-attention varlen keys on), and
* a 4-D block-diagonal causal mask ``(B, 1, T, T)`` (0 where attention is allowed, the dtype's
  minimum elsewhere) that Hugging Face models take as-is for ``sdpa`` and ``eager`` attention.

Labels never cross a boundary: Hugging Face causal LMs predict ``labels[t + 1]`` from position
``t``, so the label at each sample's first position is set to ``IGNORE_INDEX``; otherwise the last
token of one sample would be trained to predict the first token of the next.

Each collated batch also carries ``segment_ids`` (sample index in its row, -1 on padding) and
per-token ``dataset_ids`` / ``modality_ids`` / ``direction_ids`` so the trainer can report loss
per dataset, modality and direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from anygpt.vocab import IGNORE_INDEX


@dataclass
class Sample:
    """One training sample plus the small integer tags the metrics group by."""

    input_ids: Sequence[int]
    labels: Sequence[int]
    dataset_id: int = 0
    modality_id: int = 0
    direction_id: int = 0


def plan_rows(lengths: Sequence[int], row_len: int, pack: bool, window: int = 8) -> list[list[int]]:
    """Group sample indices into rows: first-fit over the ``window`` newest open rows when
    packing (the oldest open row is closed when the window overflows; a full row closes at
    once), one sample per row when padding.

    Only lengths are needed, so a whole epoch's plan is cheap and deterministic (the loader's
    resume position is just a row index)."""
    if row_len < 2:
        raise ValueError(f"row length must be >= 2, got {row_len}")
    if not pack:
        return [[i] for i in range(len(lengths))]
    rows: list[list[int]] = []
    open_rows: list[tuple[list[int], list[int]]] = []  # (indices, [used])
    for i, n in enumerate(lengths):
        n = min(int(n), row_len)
        for idx, used in open_rows:
            if used[0] + n <= row_len:
                break
        else:
            idx, used = [], [0]
            open_rows.append((idx, used))
            if len(open_rows) > window:
                rows.append(open_rows.pop(0)[0])
        idx.append(i)
        used[0] += n
        if used[0] == row_len:
            rows.append(idx)
            open_rows = [r for r in open_rows if r[0] is not idx]
    rows.extend(r[0] for r in open_rows)
    return rows


def collate_rows(rows: Sequence[Sequence[Sample]], row_len: int | None, pad_id: int) -> dict[str, torch.Tensor]:
    """Lay rows of samples into tensors of width ``row_len`` (or the longest row when None).

    Returns ``input_ids``, ``labels``, ``position_ids``, ``segment_ids``, ``dataset_ids``,
    ``modality_ids``, ``direction_ids`` (all ``(B, T)`` long) and ``n_real`` (real token count)."""
    width = row_len or max(sum(len(s.input_ids) for s in row) for row in rows)
    B = len(rows)
    out = {k: torch.full((B, width), v, dtype=torch.long) for k, v in (
        ("input_ids", pad_id), ("labels", IGNORE_INDEX), ("position_ids", 0), ("segment_ids", -1),
        ("dataset_ids", -1), ("modality_ids", -1), ("direction_ids", -1))}
    for b, row in enumerate(rows):
        t = 0
        for seg, s in enumerate(row):
            n = min(len(s.input_ids), width - t)
            if n <= 0:
                break
            sl = slice(t, t + n)
            out["input_ids"][b, sl] = torch.as_tensor(list(s.input_ids[:n]))
            out["labels"][b, sl] = torch.as_tensor(list(s.labels[:n]))
            out["labels"][b, t] = IGNORE_INDEX  # no prediction across the boundary
            out["position_ids"][b, sl] = torch.arange(n)
            out["segment_ids"][b, sl] = seg
            out["dataset_ids"][b, sl] = s.dataset_id
            out["modality_ids"][b, sl] = s.modality_id
            out["direction_ids"][b, sl] = s.direction_id
            t += n
        # padding keeps increasing positions so it never looks like a new packed sample
        out["position_ids"][b, t:] = torch.arange(t, width) if t < width else out["position_ids"][b, t:]
    out["n_real"] = (out["segment_ids"] >= 0).sum()
    return out


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """4-D additive mask ``(B, 1, T, T)``: query ``i`` sees key ``j`` iff ``j <= i`` and both are in
    the same sample. Padding (segment -1) sees only itself, so no row is fully masked (no NaN)."""
    T = segment_ids.shape[-1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = same & causal & (segment_ids[:, None, :] >= 0)
    allowed |= torch.eye(T, dtype=torch.bool, device=segment_ids.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def pad_batch(samples: Sequence[Sample], pad_id: int, max_len: int | None = None) -> dict[str, torch.Tensor]:
    """Padding-based batching: one sample per row, right-padded to the longest (truncated to
    ``max_len``). Same keys as packed batches, plus a 2-D ``attention_mask``."""
    rows = [[s] for s in samples]
    width = max(len(s.input_ids) for s in samples)
    batch = collate_rows(rows, min(width, max_len) if max_len else width, pad_id)
    batch["attention_mask"] = (batch["segment_ids"] >= 0).long()
    return batch


# attention kernels that keep packed samples apart from position_ids alone (varlen on the restarts)
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")


def resolve_attention(attention: str, attn_implementation: str | None) -> str:
    """How packed samples are kept apart: ``auto`` picks ``position_ids`` (no T×T mask, what
    transformers' padding-free collator feeds flash-attention varlen) for a varlen kernel and the
    dense block-diagonal ``mask`` otherwise (SDPA / eager, the CPU path). ``position_ids`` with
    a kernel that ignores the restarts would let samples attend to each other: refused."""
    if attention == "auto":
        return "position_ids" if attn_implementation in VARLEN_ATTENTION else "mask"
    if attention == "position_ids" and attn_implementation not in VARLEN_ATTENTION:
        raise ValueError(f"data.attention=position_ids needs attn_implementation {' or '.join(VARLEN_ATTENTION)} "
                         f"(with {attn_implementation} packed samples would attend to each other); use auto or mask")
    if attention not in ("mask", "position_ids"):
        raise ValueError(f"data.attention must be auto, mask or position_ids, got {attention!r}")
    return attention


def model_inputs(batch: dict[str, torch.Tensor], dtype: torch.dtype, attention: str = "mask") -> dict[str, torch.Tensor]:
    """The keyword arguments for ``model(...)`` from a collated batch.

    ``attention``: ``"mask"`` builds the 4-D block-diagonal mask (sdpa / eager), ``"position_ids"``
    passes only the restarting positions (flash-attention varlen detects packed samples from them)."""
    kw = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    if attention == "mask":
        kw["attention_mask"] = block_causal_mask(batch["segment_ids"], dtype)
    elif attention != "position_ids":
        raise ValueError(f"attention must be 'mask' or 'position_ids', got {attention!r}")
    return kw


def real_token_fraction(batch: dict[str, torch.Tensor]) -> float:
    """Fraction of positions in the batch that hold real (non-padding) tokens."""
    return float(batch["n_real"]) / batch["input_ids"].numel()
