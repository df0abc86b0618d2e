"""What every paper benchmark shares: items, the resumable per-item log, bootstrap intervals
(from :mod:`anygpt.eval.metrics`) and the ``not scored`` convention; the paper's decoding settings
are ``PRESETS["paper"]`` in :mod:`anygpt.inference.settings`.

A benchmark (one small module per data set, registered in :mod:`anygpt.eval.benchmarks`) says
how to read its data set in the layout it is published in (:meth:`Benchmark.read`), which
per-item scores need a local model (:attr:`Benchmark.scorers`) and how the corpus figures are
computed from the per-item records (:meth:`Benchmark.aggregate`). The runner
(:mod:`anygpt.eval.benchmarks.runner`) does the rest.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from anygpt.eval.metrics import mean_interval, ratio_interval
from anygpt.utils import append_jsonl

class NotScored(Exception):
    """A metric cannot be computed (missing local model, missing tool): the message says why."""


@dataclass
class Item:
    """One benchmark item. ``source``: what the model is given (a media path, or a text);
    ``references``: the ground truth texts; ``extra``: per-benchmark paths (reference image,
    voice prompt, real clip…)."""

    id: str
    source: str
    references: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scorer:
    """A per-item score that needs a local model: ``kind`` names the model (``clip``, ``whisper``,
    ``wavlm``, ``clap``); ``fn(records, model, out) -> values`` scores a batch of generation
    records (``out``: the output directory their media paths are relative to); None = no score."""

    kind: str
    fn: Callable[[Sequence[dict], Any, Path], list[Any]]


@dataclass
class ReadResult:
    items: list[Item]
    errors: list[str]
    source: str  # the file(s) read, for the result


class Benchmark:
    """One of the paper's rows. Subclasses set the class attributes and implement :meth:`read`
    and :meth:`aggregate`."""

    name: str = ""
    input_modality: str = ""
    output_modality: str = ""
    paper: dict[str, float] = {}  # metric -> the paper's figure
    protocol: str = ""  # what is measured and how (written into the result)
    layout: str = ""  # the published layout --data must have (for errors and --help)
    scorers: dict[str, Scorer] = {}

    def read(self, data: Path, subset: int | None, seed: int) -> ReadResult:
        """Items from the local copy at ``data`` (FileNotFoundError naming what is missing)."""
        raise NotImplementedError

    def aggregate(self, records: Sequence[dict], scores: dict[str, dict], missing: dict[str, str]) -> dict[str, dict]:
        """Corpus metrics ``{metric: {"value", "ci95", "n"}}`` or ``{metric: {"not_scored": why}}``
        from the generation records, the per-item model scores (``{id: {key: value}}``) and the
        reasons of scorers that could not run (``{key: why}``)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------- metrics helpers

def bootstrap_mean(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Mean and 95 % percentile-bootstrap interval, resampling items."""
    if len(values) == 0:
        raise NotScored("no items scored")
    return {"value": float(np.mean(values)), "ci95": list(mean_interval(values, resamples, seed)), "n": len(values)}


def bootstrap_ratio(num: Sequence[float], den: Sequence[float], resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """``Σnum / Σden`` (corpus WER: edits / reference words) with a 95 % bootstrap interval
    resampling whole items (a model's errors cluster in a few utterances)."""
    if len(num) == 0 or sum(den) == 0:
        raise NotScored("no items scored")
    return {"value": float(sum(num) / sum(den)), "ci95": list(ratio_interval(num, den, resamples, seed)), "n": len(num)}


def metric_or_reason(fn: Callable[[], dict]) -> dict:
    """``fn()``, or ``{"not_scored": reason}`` when it raises :class:`NotScored`."""
    try:
        return fn()
    except NotScored as e:
        return {"not_scored": str(e)}


def item_scores(records: Sequence[dict], scores: dict[str, dict], key: str, missing: dict[str, str]) -> list[float]:
    """The per-item values of ``key`` over ``records`` (NotScored with the reason when the scorer
    could not run; items whose score is absent or None are left out)."""
    if key in missing:
        raise NotScored(missing[key])
    vals = [scores.get(r["id"], {}).get(key) for r in records]
    vals = [float(v) for v in vals if v is not None]
    if not vals:
        raise NotScored(f"no item has a {key} score")
    return vals


# ---------------------------------------------------------------------------- the per-item log

class ItemLog:
    """An append-only JSONL file of per-item records, safe against a kill at any moment.

    Each record is one ``os.write`` of a whole line on an ``O_APPEND`` descriptor, then fsync, so
    a line is either all there or (killed mid-write) a torn tail, which :meth:`open` cuts off.
    The first line is a header (``fingerprint``): resuming with other settings is refused rather
    than mixing two runs in one figure."""

    def __init__(self, path: Path, fingerprint: dict[str, Any]):
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.records: dict[str, dict] = {}

    def open(self) -> "ItemLog":
        """Read what an earlier run finished (``records``) and get ready to append."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            raw = self.path.read_bytes()
            keep = raw[: raw.rfind(b"\n") + 1]  # a torn last line (killed mid-write) is dropped
            if len(keep) != len(raw):
                with open(self.path, "r+b") as f:
                    f.truncate(len(keep))
            lines = keep.decode("utf-8").splitlines()
            if lines:
                head = json.loads(lines[0])
                if head.get("fingerprint") != self.fingerprint:
                    diff = sorted(k for k in set(head.get("fingerprint", {})) | set(self.fingerprint)
                                  if head.get("fingerprint", {}).get(k) != self.fingerprint.get(k))
                    raise ValueError(f"{self.path}: made by a run with other settings ({', '.join(diff)} differ); "
                                     "use another --out or delete the file to start over")
                for line in lines[1:]:
                    rec = json.loads(line)
                    self.records[str(rec["id"])] = rec
                return self
        self._append({"fingerprint": self.fingerprint})
        return self

    def _append(self, obj: dict) -> None:
        append_jsonl(self.path, obj)

    def add(self, record: dict) -> None:
        """Append one finished item (``record["id"]`` required)."""
        self._append(record)
        self.records[str(record["id"])] = record


class ScoreLog(ItemLog):
    """Like :class:`ItemLog`, but several lines may name one id (one per scorer); they merge."""

    def open(self) -> "ScoreLog":
        super().open()
        merged: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines()[1:]:
                rec = json.loads(line)
                merged.setdefault(str(rec["id"]), {}).update({k: v for k, v in rec.items() if k != "id"})
        self.records = merged
        return self

    def add(self, record: dict) -> None:
        self._append(record)
        self.records.setdefault(str(record["id"]), {}).update({k: v for k, v in record.items() if k != "id"})


# ---------------------------------------------------------------------------- media of records

def read_wave(path: str | os.PathLike, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """A mono float32 waveform and its rate (the first ``max_seconds`` when given)."""
    import soundfile as sf

    wav, rate = sf.read(str(path), dtype="float32", always_2d=True)
    wav = wav.mean(1)
    if max_seconds is not None:
        wav = wav[: int(max_seconds * rate)]
    return wav, int(rate)


def per_rate(waves: Sequence[tuple[np.ndarray, int]], fn: Callable[[list[np.ndarray], int, list[int]], list[Any]]) -> list[Any]:
    """``fn(waves, rate, indices)`` once per sample rate among ``waves`` (one call in practice:
    one batch for the judge model), results back in the input order."""
    got: dict[int, Any] = {}
    for rate in sorted({r for _, r in waves}):
        idx = [i for i, (_, r) in enumerate(waves) if r == rate]
        got.update(zip(idx, fn([waves[i][0] for i in idx], rate, idx)))
    return [got[i] for i in range(len(waves))]


def read_image(path: str | os.PathLike) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def require_dir(path: Path, what: str, layout: str) -> Path:
    """``path`` if it is a directory, else FileNotFoundError naming the published layout."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no {what} directory (expected the published layout: {layout})")
    return path
