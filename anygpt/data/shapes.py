"""Images of one coloured shape on a plain background, their captions, and the analysis that reads
colour and shape back (used to score text→image generation).

The corpus draws shapes anywhere in the picture (fully inside it), ¼ to ¾ of its shorter side, in
a shade around the named colour (``SHADE_SPREAD``), on a plain background from white to black
(``BACKGROUNDS``, never the shape's own colour family), and some pictures at other sizes and
aspect ratios (``FRAMES``: the image tokenizer resizes them as it resizes a user's picture).

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
# plain backgrounds from white to black, grey and coloured ones; a shape is never drawn on a
# background of its own colour family (closer than ``MIN_CONTRAST`` to the named colour)
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255), "light grey": (200, 200, 200), "grey": (128, 128, 128), "dark grey": (64, 64, 64),
    "black": (0, 0, 0), "cream": (250, 240, 200), "pink": (250, 200, 210), "light blue": (190, 215, 245),
    "mint": (200, 240, 210), "navy": (20, 30, 80),
}
MIN_CONTRAST = 110.0  # RGB distance between a named colour and any background it may sit on
# a tinted background belongs to the family of the colour it is a tint of
BACKGROUND_FAMILY: dict[str, str] = {"pink": "red", "light blue": "blue", "navy": "blue", "mint": "green",
                                     "cream": "yellow", "dark grey": "black", "black": "black"}
# a shade is the named colour moved by up to ±SHADE_SPREAD on each channel, kept only while the named
# colour is still the nearest palette entry (so the caption's colour word stays the right one)
SHADE_SPREAD = 28
SIZE_RANGE = (0.25, 0.75)  # side of the shape's box as a share of the picture's shorter side
# share of pictures drawn at another size or aspect ratio; the tokenizer resizes them on load
OTHER_FRAME_SHARE = 0.3
FRAMES: tuple[tuple[int, int], ...] = ((100, 60), (60, 100), (96, 96), (128, 128), (48, 48), (128, 80), (80, 128), (200, 150))
_MASK_GRID = 24  # side of the normalised mask compared against the canonical shapes


def backgrounds_for(colour: str) -> list[str]:
    """The backgrounds a ``colour`` shape may be drawn on (all but its own colour family)."""
    c = np.array(COLOURS[colour], dtype=np.float64)
    return [b for b, rgb in BACKGROUNDS.items()
            if BACKGROUND_FAMILY.get(b) != colour and float(np.linalg.norm(c - np.array(rgb))) >= MIN_CONTRAST]


def draw_shade(rng: random.Random, colour: str) -> tuple[int, int, int]:
    """A random shade around the named ``colour`` (see ``SHADE_SPREAD``) that is still nearest to it."""
    base = COLOURS[colour]
    palette = {n: np.array(v, dtype=np.float64) for n, v in COLOURS.items()}
    while True:
        shade = tuple(min(255, max(0, v + rng.randint(-SHADE_SPREAD, SHADE_SPREAD))) for v in base)
        s = np.array(shade, dtype=np.float64)
        if min(palette, key=lambda n: float(np.linalg.norm(palette[n] - s))) == colour:
            return shade  # type: ignore[return-value]


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
                 background: str = "white", fill: tuple[int, int, int] | None = None,
                 frame: tuple[int, int] | None = None) -> Image.Image:
    """Draw one shape. ``box`` = (x0, y0, side) in pixels (default: centred, 60% of the picture);
    ``fill``: the RGB shade to paint (default: the named colour itself); ``frame`` = (width,
    height) of the picture (default: ``size`` × ``size``)."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; known: {', '.join(COLOURS)}")
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; known: {', '.join(BACKGROUNDS)}")
    w, h = frame or (size, size)
    if box is None:
        side = int(min(w, h) * 0.6)
        box = ((w - side) // 2, (h - side) // 2, side)
    x0, y0, s = box
    img = Image.new("RGB", (w, h), BACKGROUNDS[background])
    draw = ImageDraw.Draw(img)
    pts = _polygon(shape, x0, y0, s - 1)
    paint = tuple(fill) if fill is not None else COLOURS[colour]
    if pts is None:
        draw.ellipse([x0, y0, x0 + s - 1, y0 + s - 1], fill=paint)
    else:
        draw.polygon(pts, fill=paint)
    return img


_CAPTIONS = (
    "a {colour} {shape}",
    "a {sz} {colour} {shape}",
    "a {colour} {shape} on a {bg} background",
    "a {sz} {colour} {shape} on a {bg} background",
    "a picture of a {colour} {shape}",
)


def shape_box(rng: random.Random, size: int, frac: float, height: int | None = None) -> tuple[int, int, int]:
    """(x0, y0, side) of a shape whose side is ``frac`` of the picture's shorter side, anywhere in
    a ``size`` × ``height`` picture (default square) and fully inside it."""
    w, h = size, height or size
    side = min(min(w, h), max(12, int(round(min(w, h) * frac))))
    return rng.randint(0, w - side), rng.randint(0, h - side), side


def position_word(box: tuple[int, int, int], frame: tuple[int, int]) -> str:
    """Where the shape's centre sits in a 3×3 grid of the picture: ``top left`` … ``centre`` …
    ``bottom right`` (recorded for evaluation breakdowns, not said in captions)."""
    x0, y0, s = box
    w, h = frame
    col = ("left", "", "right")[min(2, int(3 * (x0 + s / 2) / w))]
    row = ("top", "", "bottom")[min(2, int(3 * (y0 + s / 2) / h))]
    return " ".join(p for p in (row, col) if p) or "centre"


def draw_shape_item(rng: random.Random, size: int = 64) -> ShapeItem:
    """A random shape, colour shade, background (never the colour's own family), size (¼ to ¾ of
    the picture), position (anywhere, fully inside) and picture size (``size`` square, or one of
    ``FRAMES`` for ``OTHER_FRAME_SHARE`` of the items), with a caption from a few phrasings."""
    shape = rng.choice(SHAPES)
    colour = rng.choice(list(COLOURS))
    bg = rng.choice(backgrounds_for(colour))
    shade = draw_shade(rng, colour)
    frame = rng.choice(FRAMES) if rng.random() < OTHER_FRAME_SHARE else (size, size)
    frac = rng.uniform(*SIZE_RANGE)
    box = shape_box(rng, frame[0], frac, frame[1])
    sz = "small" if frac < sum(SIZE_RANGE) / 2 else "large"
    caption = rng.choice(_CAPTIONS).format(colour=colour, shape=shape, sz=sz, bg=bg)
    image = render_shape(shape, colour, size, box, bg, fill=shade, frame=frame)
    attrs = {"shape": shape, "colour": colour, "background": bg, "size": sz, "box": list(box),
             "size_frac": round(box[2] / min(frame), 3), "position": position_word(box, frame),
             "shade": list(shade), "frame": list(frame)}
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

    raw = mask
    opened = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))
    if opened.sum() >= 4:
        mask = opened
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())[1:]
        mask = labels == (int(sizes.argmax()) + 1)
    # the opening also erodes thin parts (a small star's points): take back the raw pixels that
    # touch the kept region
    return raw & ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool))


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
