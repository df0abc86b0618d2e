"""The tokenize job's input: a manifest (JSONL ``{"id", "path", "text"?}`` or a saved HF dataset
with ``path``/``text`` columns) read into items and a hash of their content."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from anygpt.utils import read_jsonl


@dataclass
class ManifestItem:
    id: str
    path: str  # as written in the manifest (recorded as the shard's ``source``)
    resolved: Path  # path resolved against the manifest's folder
    text: str | None = None


def read_manifest(manifest: str | os.PathLike | None = None, hf_dataset: str | os.PathLike | None = None) -> tuple[list[ManifestItem], str]:
    """Manifest rows and a hash of their content. Duplicate or missing ids fail with the line."""
    items: list[ManifestItem] = []
    h = hashlib.sha256()
    if hf_dataset is not None:
        import datasets

        ds = datasets.load_from_disk(str(hf_dataset))
        if "path" not in ds.column_names:
            raise ValueError(f"{hf_dataset}: dataset has no 'path' column (columns: {ds.column_names})")
        base = Path(hf_dataset)
        rows: Iterator[tuple[str, dict]] = ((f"{hf_dataset}[{i}]", {"id": str(i), **r}) for i, r in enumerate(ds))
    else:
        if manifest is None:
            raise ValueError("give a manifest (--manifest FILE) or a dataset (--hf-dataset DIR)")
        base = Path(manifest).parent
        if not Path(manifest).exists():
            raise FileNotFoundError(f"{manifest}: manifest not found")
        rows = ((f"{manifest}:{n}", r) for n, r in read_jsonl(manifest))
    seen: dict[str, str] = {}
    for where, r in rows:
        if not r.get("path") or r.get("id") is None:
            raise ValueError(f"{where}: each row needs 'id' and 'path'")
        iid = str(r["id"])
        if iid in seen:
            raise ValueError(f"{where}: duplicate id {iid!r} (first at {seen[iid]})")
        seen[iid] = where
        p = Path(os.path.expanduser(str(r["path"])))
        text = r.get("text")
        items.append(ManifestItem(iid, str(r["path"]), p if p.is_absolute() else base / p, None if text is None else str(text)))
        h.update(json.dumps([iid, str(r["path"]), text], ensure_ascii=False).encode())
    if not items:
        raise ValueError(f"{hf_dataset or manifest}: manifest has no rows")
    return items, h.hexdigest()[:16]
