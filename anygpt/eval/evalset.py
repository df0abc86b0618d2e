"""Held-out evaluation sets: read the corpus's per-modality, per-split JSONL manifests.

A manifest line is ``{"id", "path", "text", "attributes"}`` (docs/eval-manifests.md; ``text`` may also be a list of
reference strings; ``attributes`` a flat dict such as ``{"shape": "circle", "colour": "red"}``).
Relative paths resolve against the manifest's folder, then the data root.

Manifests are found under the data root by modality and split, trying in order::

    <root>/<modality>/<split>.jsonl          <root>/<split>/<modality>.jsonl
    <root>/<modality>_<split>.jsonl          <root>/manifests/<modality>_<split>.jsonl
    <root>/manifests/<modality>/<split>.jsonl

(the first ``**/`` match of ``<modality>*<split>*.jsonl`` as a last resort). Point
:func:`find_manifest` at another layout with ``patterns``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from anygpt.utils import read_jsonl

HELD_OUT_SPLITS = ("test", "val", "valid", "validation", "eval", "heldout")
PATTERNS = (
    "{modality}/{split}.jsonl",
    "{split}/{modality}.jsonl",
    "{modality}_{split}.jsonl",
    "manifests/{modality}_{split}.jsonl",
    "manifests/{modality}/{split}.jsonl",
)


@dataclass
class EvalItem:
    id: str
    path: Path
    text: str | list[str]
    attributes: dict = field(default_factory=dict)

    @property
    def references(self) -> list[str]:
        return [self.text] if isinstance(self.text, str) else list(self.text)


@dataclass
class EvalSet:
    modality: str
    split: str
    manifest: Path
    items: list[EvalItem]
    errors: list[str] = field(default_factory=list)  # "file:line: reason" for skipped lines

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[EvalItem]:
        return iter(self.items)

    @classmethod
    def load(
        cls,
        root: str | os.PathLike,
        modality: str,
        splits: Sequence[str] = HELD_OUT_SPLITS,
        limit: int | None = None,
        patterns: Sequence[str] = PATTERNS,
    ) -> "EvalSet":
        """The first existing manifest of ``modality`` among ``splits``; at most ``limit`` items."""
        path, split = find_manifest(root, modality, splits, patterns)
        return cls.read(path, modality, split, Path(root), limit)

    @classmethod
    def read(cls, path: str | os.PathLike, modality: str, split: str, root: Path | None = None, limit: int | None = None) -> "EvalSet":
        """Read one manifest; malformed lines are recorded in ``errors`` and skipped."""
        path = Path(path)
        items, errors = [], []
        for lineno, d in read_jsonl(path, lenient=True):
            if not isinstance(d, ValueError) and ("path" not in d or "text" not in d):
                d = ValueError(f"{path}:{lineno}: needs 'path' and 'text'")
            if isinstance(d, ValueError):
                errors.append(str(d))
                continue
            p = Path(str(d["path"]))
            if not p.is_absolute():
                cand = path.parent / p
                p = cand if cand.exists() or root is None else (root / p if (root / p).exists() else cand)
            items.append(EvalItem(str(d.get("id", f"{path.stem}-{lineno}")), p, d["text"], dict(d.get("attributes") or {})))
            if limit is not None and len(items) >= limit:
                break
        return cls(modality, split, path, items, errors)


def find_manifest(
    root: str | os.PathLike,
    modality: str,
    splits: Sequence[str] = HELD_OUT_SPLITS,
    patterns: Sequence[str] = PATTERNS,
) -> tuple[Path, str]:
    """``(manifest path, split)`` for the first split that has a manifest; FileNotFoundError
    naming every path tried otherwise."""
    root = Path(root)
    tried = []
    for split in splits:
        for pat in patterns:
            p = root / pat.format(modality=modality, split=split)
            tried.append(str(p))
            if p.is_file():
                return p, split
    for split in splits:
        hits = sorted(root.glob(f"**/{modality}*{split}*.jsonl"))
        if hits:
            return hits[0], split
    raise FileNotFoundError(f"{root}: no {modality} manifest for split {'/'.join(splits)} (tried {', '.join(tried[:6])}, …)")
