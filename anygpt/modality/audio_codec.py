"""Shared plumbing for neural audio codec backends: batching waveforms and trimming codes."""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
import torch

from anygpt.modality.media import check_waveform


def pad_batch(wavs: Sequence[np.ndarray], device: str, multiple: int = 1) -> tuple[torch.Tensor, list[int]]:
    """Mono waveforms → zero-padded ``(B, 1, T)`` tensor (T a multiple of ``multiple``) + lengths."""
    arrs = [check_waveform(np.asarray(w, dtype=np.float32).reshape(-1), "audio item") for w in wavs]
    lengths = [a.size for a in arrs]
    t = int(math.ceil(max(lengths) / multiple) * multiple)
    x = torch.zeros(len(arrs), 1, t)
    for i, a in enumerate(arrs):
        x[i, 0, : a.size] = torch.from_numpy(a)
    return x.to(device), lengths


def n_frames(n_samples: int, hop: int) -> int:
    """Codec frames covering ``n_samples`` (what an unpadded encode would produce)."""
    return max(1, int(math.ceil(n_samples / hop)))


def clean_layer_codes(codes: np.ndarray, codebook_size: int, what: str) -> np.ndarray:
    """Drop out-of-range codes (1-D) with a warning; the best valid sequence remains."""
    arr = np.asarray(codes, dtype=np.int64).reshape(-1)
    ok = (arr >= 0) & (arr < codebook_size)
    if not ok.all():
        warnings.warn(f"{what}: dropped {int((~ok).sum())} code(s) outside [0, {codebook_size})", stacklevel=3)
    return arr[ok]
