"""Deterministic k-means (k-means++ init + Lloyd iterations) in torch, for the demo codebooks.

Small and exact rather than clever: a few thousand to a few hundred thousand vectors of a few
hundred dimensions fit in seconds on a CPU.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

log = logging.getLogger(__name__)


def nearest(x: torch.Tensor, centers: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Index of the nearest center (squared Euclidean) for each row of ``x``."""
    c2 = (centers * centers).sum(1)
    out = []
    for i in range(0, x.shape[0], chunk):
        xb = x[i : i + chunk]
        d = c2[None, :] - 2.0 * (xb @ centers.T)  # |x|^2 is the same for every center
        out.append(d.argmin(1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def kmeans(data: np.ndarray | torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Fit ``k`` centers to the rows of ``data`` (N×D). With fewer distinct rows than ``k`` some
    centers repeat, so the codebook always has exactly ``k`` entries. Same input + seed → same result."""
    x = torch.as_tensor(np.asarray(data), dtype=torch.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"k-means needs a non-empty N×D array, got shape {tuple(x.shape)}")
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    distinct = n if n > 50 * k else int(torch.unique(x, dim=0).shape[0])
    if distinct < k:  # the codebook still has k entries, but only `distinct` of them can ever be used
        log.warning(f"{k} codes asked for but the training data has only {distinct} distinct vectors (frames / patches): "
                    f"at most {distinct} codes will be used; fit on more data or ask for --codebook-size {distinct} or fewer")
    # k-means++: each new center drawn with probability proportional to squared distance
    x2 = (x * x).sum(1)

    def sq_dist(c: torch.Tensor) -> torch.Tensor:  # |x - c|^2 as a mat-vec (no N×D temporary)
        return (x2 - 2.0 * (x @ c) + (c * c).sum()).clamp_min(0)

    centers = torch.empty(k, x.shape[1])
    centers[0] = x[torch.randint(n, (1,), generator=g)]
    d2 = sq_dist(centers[0])
    for j in range(1, k):
        total = d2.sum()
        if total <= 0:  # every point already is a center: repeat random points
            idx = torch.randint(n, (1,), generator=g)
        else:
            idx = torch.multinomial(d2 / total, 1, generator=g)
        centers[j] = x[idx]
        d2 = torch.minimum(d2, sq_dist(centers[j]))
    for _ in range(iters):
        assign = nearest(x, centers)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        filled = counts > 0
        new = centers.clone()
        new[filled] = sums[filled] / counts[filled, None]
        if torch.allclose(new, centers):
            break
        centers = new
    return centers.numpy()
