"""Shared plumbing for neural audio codec backends: batching waveforms, counting frames."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from anygpt.modality.media import check_waveform


def pad_waveforms(wavs: Sequence[np.ndarray], device: str, multiple: int = 1) -> tuple[torch.Tensor, list[int]]:
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
