"""MusicCaps: music captioning and text→music, both scored with a local CLAP.

Published layout read here: ``DIR/musiccaps-public.csv`` (columns ``ytid, start_s, end_s,
audioset_positive_labels, aspect_list, caption, author_id, is_balanced_subset,
is_audioset_eval``) and, for captioning, the 10 s clips named by ``ytid`` (``<ytid>.wav`` /
``.flac`` / ``.mp3``, in ``DIR``, ``DIR/audio``, ``DIR/wav`` or ``DIR/music_data``, as the common
download scripts write them). Items: the rows with ``is_audioset_eval`` true (2,858 in the
release, the split the field evaluates on).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

from anygpt.eval.benchmarks.base import (
    Benchmark, Item, ReadResult, Scorer, bootstrap_mean, item_scores, metric_or_reason, per_rate, read_wave,
)
from anygpt.eval.benchmarks.models import clap_similarity

CLIP_DIRS = (".", "audio", "wav", "music_data")
CLIP_EXTS = (".wav", ".flac", ".mp3")
COLUMNS = ("ytid", "caption")


def _find_clip(data: Path, ytid: str) -> Path | None:
    for d in CLIP_DIRS:
        for ext in CLIP_EXTS:
            p = data / d / f"{ytid}{ext}"
            if p.is_file():
                return p
    return None


class MusicCaps(Benchmark):
    """Shared reader; the two directions differ in what is generated and scored."""

    needs_clips = False
    layout = "DIR/musiccaps-public.csv (+ clips DIR/[audio/]<ytid>.wav for captioning)"

    def read(self, data: Path, subset: int | None, seed: int) -> ReadResult:
        f = data / "musiccaps-public.csv"
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found (expected the published layout: {self.layout})")
        with open(f, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing_cols = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing_cols:
                raise ValueError(f"{f}: no column(s) {missing_cols} (MusicCaps' csv has ytid, caption, is_audioset_eval, …)")
            rows = list(reader)
        items, errors = [], []
        for k, row in enumerate(rows, 2):
            if str(row.get("is_audioset_eval", "True")).strip().lower() not in ("true", "1"):
                continue
            ytid, caption = (row.get("ytid") or "").strip(), (row.get("caption") or "").strip()
            if not ytid or not caption:
                errors.append(f"{f}:{k}: empty ytid or caption")
                continue
            extra = {}
            if self.needs_clips:
                clip = _find_clip(data, ytid)
                if clip is None:
                    errors.append(f"{data}: no clip {ytid}.wav/.flac/.mp3 (looked in {', '.join(CLIP_DIRS)})")
                    continue
                extra["clip"] = str(clip)
            items.append(Item(ytid, extra.get("clip", caption), [caption], extra))
        if not items:
            raise ValueError(f"{f}: no usable row (is_audioset_eval true{', with its clip' if self.needs_clips else ''})")
        return ReadResult(items, errors, str(f))

    def aggregate(self, records: Sequence[dict], scores: dict[str, dict], missing: dict[str, str]) -> dict[str, dict]:
        return {"clap_score": metric_or_reason(lambda: bootstrap_mean(item_scores(records, scores, "clap_score", missing)))}


def _clap_caption(records: Sequence[dict], model: Any, out: Path) -> list[float]:
    waves = [read_wave(r["clip"], 10.0) for r in records]
    return per_rate(waves, lambda w, rate, idx: clap_similarity(model, w, rate, [records[i]["output"] for i in idx]))


def _clap_music(records: Sequence[dict], model: Any, out: Path) -> list[float]:
    waves = [read_wave(out / r["output_media"]) for r in records]
    return per_rate(waves, lambda w, rate, idx: clap_similarity(model, w, rate, [records[i]["references"][0] for i in idx]))


CLAP_NOTE = ("cosine of the local CLAP's audio and text embeddings (unscaled); 95 % interval: bootstrap over clips")


class MusicCapsCaption(MusicCaps):
    name = "musiccaps-caption"
    input_modality, output_modality = "music", "text"
    needs_clips = True
    paper = {"clap_score": 0.11}
    protocol = ("MusicCaps rows with is_audioset_eval true whose clip is present; the clip (cut to the music "
                "tokenizer's max_seconds) is captioned from '{instruction} {music}'; clap_score = " + CLAP_NOTE +
                ", between the real clip (first 10 s) and the generated caption")
    scorers = {"clap_score": Scorer("clap", _clap_caption)}


class MusicCapsTextToMusic(MusicCaps):
    name = "musiccaps-t2m"
    input_modality, output_modality = "text", "music"
    paper = {"clap_score": 0.14}
    protocol = ("MusicCaps rows with is_audioset_eval true; music generated from '{instruction} This is input: "
                "{caption}'; clap_score = " + CLAP_NOTE + ", between the generated music and its caption")
    scorers = {"clap_score": Scorer("clap", _clap_music)}
