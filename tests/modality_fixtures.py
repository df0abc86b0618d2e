"""Tiny generated media for the modality tests: shape images and harmonic 'vowel' audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def shape_image(rng: np.random.Generator, size: int = 64):
    """A coloured circle or square on a light background (like the demo corpus)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), tuple(int(x) for x in rng.integers(150, 256, 3)))
    d = ImageDraw.Draw(im)
    x, y = (int(v) for v in rng.integers(2, size // 2, 2))
    s = int(rng.integers(size // 4, size // 2))
    (d.ellipse if rng.integers(2) else d.rectangle)([x, y, x + s, y + s], fill=tuple(int(v) for v in rng.integers(0, 200, 3)))
    return im


def vowel(rng: np.random.Generator, seconds: float = 1.0, sr: int = 16000) -> np.ndarray:
    """A harmonic tone with a syllable-rate amplitude envelope (speech-like spectra)."""
    t = np.arange(int(sr * seconds)) / sr
    f0 = rng.uniform(100, 300)
    sig = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.2 * sig * np.abs(np.sin(2 * np.pi * rng.uniform(1, 3) * t))).astype(np.float32)


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i:03d}.png"
        shape_image(rng).save(p)
        paths.append(p)
    return paths


def write_manifest(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
