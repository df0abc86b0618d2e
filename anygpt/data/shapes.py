"""Images of one coloured shape on a plain background, their captions, and the analysis that reads
colour and shape back (used to score text→image generation).

Every shape is drawn inside a square box, so a shape is recognised by comparing the foreground
mask, rescaled to its bounding box, against each shape's canonical mask (best IoU); the colour is
the palette entry nearest to most foreground pixels. On clean images both are exact.

Example::

    rng = random.Random(0)
    item = draw_shape_item(rng, size=64)        # ShapeItem(image, caption, attributes)
    analyse_image(item.image)                    # {"colour": "red", "shape": "circle", ...}
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (235, 215, 20),
    "green": (30, 160, 60),
    "blue": (40, 80, 225),
    "purple": (140, 50, 185),
    "black": (25, 25, 25),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"white": (255, 255, 255), "grey": (200, 200, 200)}
JITTER = 0.0625  # shapes sit within ±4 px of the centre on a 64 px image
_MASK_GRID = 24  # side of the normalised mask compared against the canonical shapes


@dataclass
class ShapeItem:
    """One corpus image with its caption and ground-truth attributes."""

    image: Image.Image
    caption: str
    attributes: dict[str, object]


def _polygon(shape: str, x0: float, y0: float, s: float) -> list[tuple[float, float]] | None:
    """Vertices of ``shape`` in the box (x0, y0, s×s); None for the circle."""
    cx, cy = x0 + s / 2, y0 + s / 2
    if shape == "square":
        return [(x0, y0), (x0 + s, y0), (x0 + s, y0 + s), (x0, y0 + s)]
    if shape == "triangle":
        return [(cx, y0), (x0 + s, y0 + s), (x0, y0 + s)]
    if shape == "diamond":
        return [(cx, y0), (x0 + s, cy), (cx, y0 + s), (x0, cy)]
    if shape == "cross":
        a, b = s / 3, 2 * s / 3
        return [(x0 + a, y0), (x0 + b, y0), (x0 + b, y0 + a), (x0 + s, y0 + a), (x0 + s, y0 + b), (x0 + b, y0 + b),
                (x0 + b, y0 + s), (x0 + a, y0 + s), (x0 + a, y0 + b), (x0, y0 + b), (x0, y0 + a), (x0 + a, y0 + a)]
    if shape == "star":
        # five points; scaled so the star fills its box vertically
        r_out, r_in = s / 2, s / 2 * 0.45
        cy_star = y0 + r_out * 1.06
        pts = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * math.cos(ang), cy_star + r * math.sin(ang)))
        return pts
    if shape == "circle":
        return None
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def render_shape(shape: str, colour: str, size: int = 64, box: tuple[int, int, int] | None = None,
                 background: str = "white") -> Image.Image:
    """Draw one shape. ``box`` = (x0, y0, side) in pixels; default: centred, 60% of the image."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; known: {', '.join(COLOURS)}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; known: {', '.join(BACKGROUNDS)}")
    if box is None:
        side = int(size * 0.6)
        box = ((size - side) // 2, (size - side) // 2, side)
    x0, y0, s = box
    img = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(img)
    pts = _polygon(shape, x0, y0, s - 1)
    if pts is None:
        draw.ellipse([x0, y0, x0 + s - 1, y0 + s - 1], fill=COLOURS[colour])
    else:
        draw.polygon(pts, fill=COLOURS[colour])
    return img


_CAPTIONS = (
    "a {colour} {shape}",
    "a {sz} {colour} {shape}",
    "a {colour} {shape} on a {bg} background",
    "a {sz} {colour} {shape} on a {bg} background",
    "a picture of a {colour} {shape}",
)


def shape_box(rng: random.Random, size: int, frac: float) -> tuple[int, int, int]:
    """(x0, y0, side) of a shape whose side is ``frac`` of the image, near the centre: jitter up to
    ±``JITTER`` of the image side. A position anywhere in the picture would make a tiny model spend
    its budget on where the shape is rather than what it is."""
    side = max(12, int(round(size * frac)))
    j = int(round(size * JITTER))
    x0 = min(max(0, (size - side) // 2 + rng.randint(-j, j)), size - side)
    y0 = min(max(0, (size - side) // 2 + rng.randint(-j, j)), size - side)
    return x0, y0, side


def draw_shape_item(rng: random.Random, size: int = 64) -> ShapeItem:
    """A random shape/colour/background/size/position with a caption drawn from a few phrasings."""
    shape = rng.choice(SHAPES)
    colour = rng.choice(list(COLOURS))
    bg = rng.choice(list(BACKGROUNDS))
    frac = rng.uniform(0.4, 0.8)
    x0, y0, side = shape_box(rng, size, frac)
    sz = "small" if frac < 0.6 else "large"
    caption = rng.choice(_CAPTIONS).format(colour=colour, shape=shape, sz=sz, bg=bg)
    image = render_shape(shape, colour, size, (x0, y0, side), bg)
    attrs = {"shape": shape, "colour": colour, "background": bg, "size": sz, "box": [x0, y0, side]}
    return ShapeItem(image, caption, attrs)


@lru_cache(maxsize=None)
def _canonical_masks() -> dict[str, np.ndarray]:
    """Each shape drawn large, cropped to its bounding box and resampled to the comparison grid."""
    out = {}
    for shape in SHAPES:
        img = render_shape(shape, "black", 200, (4, 4, 192))
        out[shape] = _normalised_mask(_foreground(np.asarray(img, dtype=np.float32), np.array([255.0, 255, 255])))
    return out


def _foreground(pixels: np.ndarray, background: np.ndarray, threshold: float = 60.0) -> np.ndarray:
    return np.linalg.norm(pixels - background, axis=-1) > threshold


def _clean(mask: np.ndarray) -> np.ndarray:
    """Drop speckles (a 3×3 opening) and keep the largest connected region: generated images are
    noisy, and one stray pixel would stretch the bounding box."""
    from scipy import ndimage

    opened = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))
    if opened.sum() >= 4:
        mask = opened
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        mask = labels == (int(sizes.argmax()) + 1)
    return mask


def _normalised_mask(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    im = Image.fromarray((crop * 255).astype(np.uint8)).resize((_MASK_GRID, _MASK_GRID), Image.BILINEAR)
    return np.asarray(im) >= 128


def analyse_image(img: Image.Image | np.ndarray) -> dict[str, object]:
    """Recover ``{"colour", "shape"}`` (+ ``"background"``, ``"confidence"``) from an image.

    Background = median border colour; foreground = pixels far from it, cleaned of speckles, largest
    region; colour = the most common nearest palette entry over the foreground; shape = best IoU of
    the bbox-normalised foreground against the canonical masks. Images with no foreground give ``None`` for colour and shape."""
    arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"analyse_image expects an RGB image, got array of shape {arr.shape}")
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    bg = np.median(border, axis=0)
    bg_name = min(BACKGROUNDS, key=lambda k: float(np.linalg.norm(np.array(BACKGROUNDS[k]) - bg)))
    mask = _clean(_foreground(arr, bg))
    if mask.sum() < 4:
        return {"colour": None, "shape": None, "background": bg_name, "confidence": 0.0}
    fg = arr[mask]
    names = list(COLOURS)
    palette = np.array([COLOURS[n] for n in names], dtype=np.float32)
    nearest = np.argmin(((fg[:, None, :] - palette[None]) ** 2).sum(-1), axis=1)
    colour = names[int(np.bincount(nearest, minlength=len(names)).argmax())]
    norm = _normalised_mask(mask)
    scores = {}
    for shape, ref in _canonical_masks().items():
        scores[shape] = float((norm & ref).sum() / max(1, (norm | ref).sum()))
    shape = max(scores, key=scores.get)
    return {"colour": colour, "shape": shape, "background": bg_name, "confidence": scores[shape]}
