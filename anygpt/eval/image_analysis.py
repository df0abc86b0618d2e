"""Recover ``{"colour", "shape"}`` from a decoded picture, to score text→image.

The corpus module owns the real analysis (``anygpt.data.corpus.analyse_image``: it knows how its
pictures are drawn); :func:`resolve_image_analyser` uses it when present. Otherwise a local
fallback, :func:`simple_analyse_image`, is used and the result says so: background = the most
common border colour, foreground = pixels far from it, colour = nearest named colour of the
foreground median, shape = from how much of its bounding box the foreground fills.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

ImageAnalyser = Callable[[Any], dict]

PALETTE = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 215, 40),
    "purple": (140, 60, 180), "orange": (240, 140, 30), "black": (20, 20, 20), "white": (245, 245, 245),
    "pink": (240, 130, 190), "brown": (130, 80, 40), "grey": (128, 128, 128), "cyan": (40, 200, 210),
}


def simple_analyse_image(img: Any) -> dict[str, str | None]:
    """Fallback analysis of a PIL image (or HxWx3 array); ``None`` where nothing stands out."""
    a = np.asarray(img.convert("RGB") if hasattr(img, "convert") else img, dtype=np.float32)[..., :3]
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    q = (border // 32).astype(int)
    keys, counts = np.unique(q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2], return_counts=True)
    k = keys[np.argmax(counts)]
    bg = border[(q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2]) == k].mean(axis=0)
    mask = np.linalg.norm(a - bg, axis=-1) > 60
    if mask.sum() < max(4, 0.005 * mask.size):
        return {"colour": None, "shape": None}
    fg = np.median(a[mask], axis=0)
    colour = min(PALETTE, key=lambda c: float(np.sum((np.asarray(PALETTE[c]) - fg) ** 2)))
    ys, xs = np.nonzero(mask)
    h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = mask.sum() / float(h * w)
    if fill > 0.9:
        shape = "square" if 0.8 < h / w < 1.25 else "rectangle"
    elif fill > 0.68:
        shape = "circle"
    elif fill > 0.46:
        shape = "triangle"
    else:
        shape = "star"
    return {"colour": colour, "shape": shape}


def resolve_image_analyser() -> tuple[ImageAnalyser, str]:
    """``(analyse_image, name)``: the corpus's analyser when importable, else the fallback."""
    try:
        from anygpt.data.corpus import analyse_image  # type: ignore[attr-defined]

        return analyse_image, "anygpt.data.corpus.analyse_image"
    except ImportError:
        return simple_analyse_image, "anygpt.eval.image_analysis.simple_analyse_image (fallback: corpus analyser missing)"
