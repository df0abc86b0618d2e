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


LOSS_GROUPS = ("modality/", "direction/", "dataset/")  # the trainer's per-group keys, one panel each


def loss_panels(names: Sequence[str]) -> dict[str, list[str]]:
    """Series names (``[stage: ][split ]key``) grouped into panels, in order: per stage, the
    overall loss (train and validation) and one panel per kind of per-group key."""
    panels: dict[str, list[str]] = {}
    for name in names:
        stage, sep, rest = name.partition(": ")
        stage, rest = (stage, rest) if sep else ("", name)
        key = rest.split(" ", 1)[-1]
        group = next((g.rstrip("/") for g in LOSS_GROUPS if key.startswith(g)), "loss")
        panels.setdefault(f"{stage}: {group}" if stage else group, []).append(name)
    stages = list(dict.fromkeys(p.rpartition(": ")[0] for p in panels))
    groups = ["loss", *(g.rstrip("/") for g in LOSS_GROUPS)]
    return {p: panels[p] for st in stages for g in groups for p in [f"{st}: {g}" if st else g] if p in panels}


def spans_decades(values: Sequence[float]) -> bool:
    """True when positive ``values`` span more than a factor of ten (a log axis reads them)."""
    pos = [v for v in values if v > 0]
    return bool(pos) and len(pos) == len(values) and max(pos) / min(pos) > 10


def _log_label(value: float, _pos: object = None) -> str:
    """Log-axis tick labels 0.5, 1, 2, 5, 10 … (not 5×10⁻¹; other minor ticks unlabelled)."""
    import math

    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (1.0, 2.0, 5.0) else ""


def loss_curves_png(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike, title: str = "training loss") -> Path:
    """One panel per stage and group of series (:func:`loss_panels`), stacked, each with its
    legend outside the axes on the right and a log loss axis where its values span decades."""
    plt = _plt()
    panels = loss_panels(list(series)) or {"loss": []}
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 2.4 * len(panels)), squeeze=False)
    for ax, (panel, names) in zip(axes[:, 0], panels.items()):
        for name in names:
            x, y = series[name]
            label = name.split(": ", 1)[-1]
            ax.plot(list(x), list(y), label=label, linewidth=1.2, marker="." if len(x) < 60 else None)
        if spans_decades([v for n in names for v in series[n][1]]):
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            plain = FuncFormatter(_log_label)
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.set_title(f"{title}: {panel}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return _save(fig, path)
