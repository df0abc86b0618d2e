"""Code shards: Parquet files of tokenized media, one row per item.

Columns: ``id`` (str), ``modality`` (str), ``codes`` (list<int32>, modality-local, flattened as
the tokenizer declares), ``text`` (str or null: caption / transcript / description), ``source``
(str: the media path), ``offset`` / ``duration`` (float seconds or null: the window of a long
recording this row holds; null for images). The file's schema metadata records the tokenizer that made the codes
(``anygpt.fingerprint``, ``anygpt.backend``, ``anygpt.modality``, ``anygpt.codebook_size``) so
that training can refuse shards made by another tokenizer.

Shards are written atomically (temp file + rename): a shard file that exists is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from anygpt.utils import atomic_path

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("modality", pa.string()),
        ("codes", pa.list_(pa.int32())),
        ("text", pa.string()),
        ("source", pa.string()),
        ("offset", pa.float64()),  # audio: seconds into the source where this row's window starts
        ("duration", pa.float64()),  # audio: seconds of source this row's codes cover
    ]
)
META_PREFIX = "anygpt."


class FingerprintMismatch(ValueError):
    """Shards made by a different tokenizer than the one the model's layout expects."""


def write_shard(path: str | os.PathLike, rows: Sequence[dict], meta: dict[str, object]) -> Path:
    """Write rows (dicts with the schema's keys; ``text``/``source`` optional) atomically."""
    cols = {name: [r.get(name) for r in rows] for name in SCHEMA.names}
    cols["codes"] = [[int(c) for c in r["codes"]] for r in rows]
    table = pa.Table.from_pydict(cols, schema=SCHEMA)
    md = {f"{META_PREFIX}{k}".encode(): json.dumps(v).encode() for k, v in meta.items()}
    table = table.replace_schema_metadata(md)
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_meta(path: str | os.PathLike) -> dict[str, object]:
    """The ``anygpt.*`` metadata of one shard (without the prefix)."""
    md = pq.read_schema(path).metadata or {}
    out = {}
    for k, v in md.items():
        k = k.decode()
        if k.startswith(META_PREFIX):
            out[k[len(META_PREFIX) :]] = json.loads(v)
    return out


def shard_files(src: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """A directory's ``*.parquet`` (sorted), or the given files."""
    if isinstance(src, (str, os.PathLike)):
        p = Path(src)
        files = sorted(p.glob("*.parquet")) if p.is_dir() else [p]
    else:
        files = [Path(s) for s in src]
    if not files:
        raise FileNotFoundError(f"{src}: no .parquet code shards")
    return files


def load_shards(src, expect_fingerprint: str | None = None):
    """All rows of the shards as a ``datasets.Dataset``; with ``expect_fingerprint`` a shard made
    by another tokenizer raises :class:`FingerprintMismatch` naming the file."""
    import datasets

    files = shard_files(src)
    for f in files:
        fp = read_meta(f).get("fingerprint")
        if expect_fingerprint is not None and fp != expect_fingerprint:
            raise FingerprintMismatch(f"{f}: codes made by tokenizer {fp}, the model expects {expect_fingerprint}")
    # promote: shards written before the offset/duration columns existed read as nulls there
    table = pa.concat_tables([pq.read_table(f).replace_schema_metadata(None) for f in files], promote_options="default")
    return datasets.Dataset(table)
