"""Where alignment pairs come from: code shards (``anygpt tokenize`` output) and the reference's
pretokenized JSONL (``{"text", "image"|"speech"|"music": "<soim>…<eoim>"}``)."""

from __future__ import annotations

import collections.abc
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from anygpt.data.alignment import Pair, PairBatch
from anygpt.data.error_log import ErrorLog
from anygpt.data.shards import load_shards, read_meta, shard_files
from anygpt.utils import read_jsonl
from anygpt.vocab import MODALITIES, VocabLayout

REFERENCE_MEDIA_KEYS = MODALITIES  # the reference JSONL names its media keys after the modalities


class ShardPairs(collections.abc.Sequence):
    """The pairs of a code-shard dataset, read from its Arrow table (rows without text are left
    out); :meth:`take` reads many at once as arrays."""

    def __init__(self, ds, modality: str, where: str):
        import pyarrow.compute as pc

        self.ds, self.modality, self.where = ds, modality, where
        self.table = ds.data.table
        text = self.table.column("text")
        has_text = pc.and_kleene(pc.is_valid(text), pc.greater(pc.utf8_length(text), 0))
        self.rows = np.flatnonzero(np.asarray(has_text.to_numpy(zero_copy_only=False), dtype=bool))

    def __len__(self) -> int:
        return len(self.rows)

    def texts(self, limit: int | None = None) -> list[str]:
        """The pairs' texts (the first ``limit``), read as one column."""
        rows = self.rows if limit is None else self.rows[:limit]
        return self.table.column("text").take(rows).to_pylist()

    def __getitem__(self, i: int) -> Pair:  # type: ignore[override]
        row = self.ds[int(self.rows[i])]
        if row["modality"] != self.modality:
            raise ValueError(f"{self.where}: row {row['id']} is {row['modality']}, the recipe says {self.modality}")
        return Pair(row["id"], self.modality, row["codes"], row["text"])

    def take(self, indices: Sequence[int]) -> PairBatch:
        """Pairs ``indices`` in one columnar read, codes as flat arrays (row-at-a-time reads and
        Python lists of codes dominated building)."""
        rows = self.rows[np.asarray(indices, np.int64)]
        return PairBatch.from_arrow(self.table.select(["id", "modality", "codes", "text"]).take(rows),
                                    self.modality, self.where)


def pairs_from_shards(src: str | os.PathLike, modality: str, expect_fingerprint: str | None = None
                      ) -> tuple[ShardPairs, str | None]:
    """Pairs of the code shards in ``src`` and the fingerprint of the tokenizer that made them."""
    files = shard_files(src)
    fps = {read_meta(f).get("fingerprint") for f in files}
    if len(fps) > 1:
        raise ValueError(f"{src}: shards made by different tokenizers ({sorted(map(str, fps))})")
    mods = {read_meta(f).get("modality") for f in files} - {None}
    if mods and mods != {modality}:
        raise ValueError(f"{src}: shards hold {sorted(mods)}, the recipe says {modality}")
    return ShardPairs(load_shards(files, expect_fingerprint=expect_fingerprint), modality, str(src)), fps.pop()


def parse_reference_line(obj: dict, layout: VocabLayout) -> Pair:
    """A line of the reference's pretraining JSONL: ``{"text", "image"|"speech"|"music": "<so..>…"}``."""
    keys = [k for k in REFERENCE_MEDIA_KEYS if k in obj]
    if len(keys) != 1:
        raise ValueError(f"expected exactly one of {', '.join(REFERENCE_MEDIA_KEYS)}, found {keys or 'none'}")
    modality = keys[0]
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("missing or empty 'text'")
    pieces = layout.parse(str(obj[modality]).strip(), strict=True)
    spans = [p for p in pieces if p[0] != "text" or str(p[1]).strip()]
    if len(spans) != 1 or spans[0][0] != modality:
        raise ValueError(f"'{modality}' must hold exactly one {modality} span of token strings")
    if not spans[0][1]:
        raise ValueError(f"empty {modality} span")
    return Pair(str(obj.get("id", "")), modality, spans[0][1], text.strip())


def reference_jsonl_pairs(files: Sequence[str | os.PathLike], layout: VocabLayout, errors: ErrorLog) -> Iterator[Pair]:
    """Pairs of the reference's pretokenized JSONL files, streamed; bad lines name ``file:line``."""
    for f in files:
        for lineno, obj in read_jsonl(f, lenient=True):
            if isinstance(obj, ValueError):
                errors.bad_line(obj)
                continue
            try:
                p = parse_reference_line(obj, layout)
            except (ValueError, KeyError) as e:
                errors.bad(f"{f}:{lineno}", str(e))
                continue
            p.id = p.id or f"{Path(f).stem}:{lineno}"
            p.source = Path(f).stem
            yield p


def files_signature(src: str | os.PathLike) -> list:
    """Names, sizes and modification times of a folder's shard files (a changed input starts a build over)."""
    return [[str(f), os.path.getsize(f), os.path.getmtime(f)] for f in shard_files(src)]
