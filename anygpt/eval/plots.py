"""PNG plots for evaluation and the report (matplotlib, Agg backend, atomic writes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

from anygpt.utils import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return path


def confusion_matrix_png(truth: Sequence[object], predicted: Sequence[object], path: str | os.PathLike, title: str) -> Path:
    """Rows = true labels, columns = predicted labels (``none`` for no prediction), counts shown."""
    import numpy as np

    plt = _plt()
    rows = sorted({str(t) for t in truth})
    cols = rows + sorted({str(p) for p in predicted if p is not None and str(p) not in rows})
    if any(p is None for p in predicted):
        cols.append("none")
    m = np.zeros((len(rows), len(cols)), dtype=int)
    for t, p in zip(truth, predicted):
        m[rows.index(str(t)), cols.index("none" if p is None else str(p))] += 1
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(cols), 1.0 + 0.5 * len(rows)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8, color="white" if m[i, j] > m.max() / 2 else "black")
    return _save(fig, path)


def histogram_png(values: Sequence[float], path: str | os.PathLike, title: str, xlabel: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(list(values), bins=20)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return _save(fig, path)


def loss_curves_png(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike, title: str = "training loss") -> Path:
    """One line per named series of ``(steps, values)``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, (x, y) in series.items():
        ax.plot(list(x), list(y), label=name, linewidth=1.2, marker="." if len(x) < 60 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if series:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
