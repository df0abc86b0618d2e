"""Flattening of multi-codebook (RVQ) codes into one token stream and back.

The reference flattens EnCodec's ``(n_q, T)`` codes frame-major with per-layer offsets: for frame
``t`` the tokens are ``c0, c1 + K, c2 + 2K, c3 + 3K`` (``K`` = codebook size). Its decoder takes
every code mod ``K`` and never checks that a code sits in its layer's slot; we check, and repair
(drop or truncate) what does not fit, reporting how much was repaired.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def flatten_frame_major(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """``(n_q, T)`` layer codes → ``(T * n_q,)`` tokens with layer ``q`` offset by ``q * K``."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2:
        raise ValueError(f"expected (n_q, T) codes, got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes outside [0, {codebook_size})")
    n_q = codes.shape[0]
    offsets = (np.arange(n_q, dtype=np.int64) * codebook_size)[:, None]
    return (codes + offsets).T.reshape(-1)


@dataclass
class Unflattened:
    codes: np.ndarray  # (n_q, T)
    repaired: int  # tokens dropped because they were out of their slot or in an incomplete frame

    @property
    def ok(self) -> bool:
        return self.repaired == 0


def unflatten_frame_major(tokens, n_q: int, codebook_size: int) -> Unflattened:
    """Inverse of :func:`flatten_frame_major`, checking each token's layer slot.

    A token that is not in the slot its position calls for is dropped and the stream re-aligned
    at the next layer-0 token; a trailing incomplete frame is dropped."""
    toks = [int(t) for t in tokens]
    frames: list[list[int]] = []
    cur: list[int] = []
    repaired = 0
    for t in toks:
        q = len(cur)
        slot_lo = q * codebook_size
        if slot_lo <= t < slot_lo + codebook_size:
            cur.append(t - slot_lo)
            if len(cur) == n_q:
                frames.append(cur)
                cur = []
        elif 0 <= t < codebook_size:  # a layer-0 token out of turn: start a new frame here
            repaired += len(cur)
            cur = [t]
            if n_q == 1:
                frames.append(cur)
                cur = []
        else:
            repaired += 1
    repaired += len(cur)
    arr = np.array(frames, dtype=np.int64).reshape(-1, n_q).T if frames else np.zeros((n_q, 0), dtype=np.int64)
    return Unflattened(arr, repaired)
