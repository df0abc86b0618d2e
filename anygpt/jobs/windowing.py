"""How the tokenize job cuts long recordings into windows (one shard row per window, id
``<id>@<offset>``); the cut depends only on the file's header and the settings, so a rerun cuts the
same windows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from anygpt.jobs.manifest import ManifestItem
from anygpt.modality.base import MediaError, ModalityTokenizer


@dataclass(frozen=True)
class Windowing:
    """How long recordings are cut: ``window_seconds`` per row (None: never cut; the card's
    ``max_seconds`` then refuses long files), a new window every ``hop_seconds`` (default: the
    window, no overlap); a last window shorter than ``min_tail_seconds`` is dropped unless it is
    the only one."""

    window_seconds: float | None
    hop_seconds: float | None = None
    min_tail_seconds: float = 1.0
    max_windows: int = 1000  # one recording may give at most this many rows (a 20 s window: 5.5 h)

    def __post_init__(self) -> None:
        if self.window_seconds is not None and self.window_seconds <= 0:
            raise ValueError(f"--window-seconds must be > 0, got {self.window_seconds}")
        if self.hop_seconds is not None and (self.hop_seconds <= 0 or self.window_seconds is None):
            raise ValueError(f"--hop-seconds must be > 0 and needs a window, got {self.hop_seconds}")

    @property
    def hop(self) -> float | None:
        return self.hop_seconds or self.window_seconds

    def spans(self, duration: float) -> list[tuple[float, float | None]]:
        """``(offset, length)`` windows of a recording of ``duration`` seconds; ``[(0, None)]``
        (the whole file) when it fits in one window."""
        w = self.window_seconds
        if w is None or duration <= w + 1e-6:
            return [(0.0, None)]
        n = math.ceil((duration - w) / self.hop - 1e-9) + 1  # windows until one reaches the end
        if n > self.max_windows:
            raise MediaError(f"{duration:.0f} s would make about {n} windows of {w:g} s, more than max_windows "
                             f"{self.max_windows}; cut the recording first or use longer windows")
        out, k = [], 0
        while True:
            start = round(k * self.hop, 6)
            if start >= duration - 1e-6:
                break
            length = min(w, duration - start)
            if length < self.min_tail_seconds and out:
                break
            out.append((start, length))
            if start + w >= duration - 1e-6:
                break
            k += 1
        return out

    def to_dict(self) -> dict:
        return {"window_seconds": self.window_seconds, "hop_seconds": self.hop, "min_tail_seconds": self.min_tail_seconds}


def window_id(item_id: str, offset: float) -> str:
    """The row id of a window: ``<id>@<offset>`` with the offset in seconds (``clip@30``, ``clip@2.5``)."""
    return f"{item_id}@{offset:g}"


def load_windows(tok: ModalityTokenizer, it: ManifestItem, windowing: Windowing | None) -> list[tuple[dict, Any]]:
    """One manifest item's media: ``[(row fields, media)]``, one entry per window for a long
    recording (see :class:`Windowing`), the whole item otherwise. Raises on an unreadable file;
    a window that fails to read is raised too (the item's file is bad, not one window)."""
    from anygpt.modality.media import audio_duration

    if tok.modality == "image" or windowing is None or windowing.window_seconds is None:
        return [({"id": it.id, "offset": None, "duration": None}, tok.load_media(it.resolved))]
    duration = audio_duration(it.resolved)
    spans = windowing.spans(duration)
    if spans == [(0.0, None)]:
        return [({"id": it.id, "offset": 0.0, "duration": round(duration, 6)}, tok.load_media(it.resolved))]
    return [({"id": window_id(it.id, start), "offset": start, "duration": round(length, 6)},
             tok.load_window(it.resolved, start, length)) for start, length in spans]


def job_windowing(tok: ModalityTokenizer, window_seconds: float | None | str = "auto",
                  hop_seconds: float | None = None) -> Windowing | None:
    """The job's :class:`Windowing` (None for images); a window longer than the card's
    ``max_seconds`` is refused here, before any file is read."""
    if tok.modality == "image":
        return None
    w = tok.default_window_seconds if window_seconds == "auto" else window_seconds
    if w is not None and tok.max_seconds is not None and float(w) > tok.max_seconds:
        raise ValueError(f"--window-seconds {w} is longer than the tokenizer's max_seconds {tok.max_seconds}")
    return Windowing(None if w is None else float(w), hop_seconds)
