"""Codes → media files: from code shards, or from a token string / generated text.

Never crashes on malformed input: an unclosed span, a wrong length or out-of-range codes give a
warning and the best valid output (the backends repair what they can; a piece that still cannot
be decoded is skipped with a warning). Output names come from ``safe_name(id)``, never from the
prompt text; an index ``detokenized.jsonl`` lists what was written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from anygpt.modality.base import ModalityTokenizer
from anygpt.utils import capture_log_records, safe_name, write_jsonl

log = logging.getLogger(__name__)

INDEX_FILE = "detokenized.jsonl"
EXTENSIONS = {"image": ".png", "speech": ".wav", "music": ".wav"}


@dataclass
class DetokenizedItem:
    id: str
    modality: str
    path: str | None  # None when nothing could be decoded
    warnings: list[str] = field(default_factory=list)


class _Writer:
    """Unique safe file names in one output directory."""

    def __init__(self, out: Path):
        self.out = out
        self.used: set[str] = set()
        out.mkdir(parents=True, exist_ok=True)

    def target(self, item_id: str, modality: str) -> Path:
        stem = safe_name(item_id)
        name, n = stem, 1
        while name in self.used:
            n += 1
            name = f"{stem}-{n}"
        self.used.add(name)
        return self.out / f"{name}{EXTENSIONS[modality]}"


def decode_one(tok: ModalityTokenizer, codes, item_id: str, writer: _Writer) -> DetokenizedItem:
    """Decode one item and save it; the warnings logged meanwhile (repairs) are collected, errors
    become warnings, and each is logged once, with the item's id."""
    item = DetokenizedItem(item_id, tok.modality, None)
    with capture_log_records() as caught:
        try:
            if len(codes) == 0:
                raise ValueError("no codes")
            media = tok.decode(codes)
            item.path = str(tok.save_media(media, writer.target(item_id, tok.modality)))
        except Exception as e:  # noqa: BLE001 - one bad item must not stop the job
            item.warnings.append(f"not decoded: {type(e).__name__}: {e}")
    item.warnings[:0] = [r.getMessage() for r in caught]
    for w in item.warnings:
        log.warning(f"{item_id}: {w}")
    return item


def _write_index(out: Path, items: list[DetokenizedItem]) -> None:
    write_jsonl(out / INDEX_FILE, (i.__dict__ for i in items))


def detokenize_shards(tokenizers: Mapping[str, ModalityTokenizer], src: str | os.PathLike, out_dir: str | os.PathLike,
                      limit: int | None = None) -> list[DetokenizedItem]:
    """Every row of the shards in ``src`` → a file in ``out_dir`` (at most ``limit`` rows)."""
    import pyarrow.parquet as pq

    from anygpt.data.shards import read_meta, shard_files

    writer, items = _Writer(Path(out_dir)), []
    for f in shard_files(src):
        meta = read_meta(f)
        table = pq.read_table(f, columns=["id", "modality", "codes"]).to_pylist()
        for row in table:
            if limit is not None and len(items) >= limit:
                break
            tok = tokenizers.get(row["modality"])
            if tok is None:
                log.warning(f"{f}: row {row['id']}: no tokenizer for modality {row['modality']}; skipped")
                continue
            if meta.get("fingerprint") not in (None, tok.fingerprint):
                log.warning(f"{f}: made by tokenizer {meta.get('fingerprint')}, decoding with {tok.fingerprint}")
                meta["fingerprint"] = None  # warn once per shard
            items.append(decode_one(tok, row["codes"], str(row["id"]), writer))
    _write_index(Path(out_dir), items)
    return items


def default_layout(tokenizers: Mapping[str, ModalityTokenizer]):
    """The ``anygpt`` profile's token strings with the tokenizers' codebook sizes."""
    from anygpt.vocab import VocabLayout

    return VocabLayout.from_profile("anygpt", 0, sizes={m: t.code_layout.n_codes for m, t in tokenizers.items()})


def detokenize_text(tokenizers: Mapping[str, ModalityTokenizer], text: str, out_dir: str | os.PathLike,
                    layout: Any = None, stem: str = "span") -> list[DetokenizedItem]:
    """Media spans in a token string (``<soim><👀12>…<eoim>``) → files ``{stem}-{i}-{modality}``."""
    from anygpt.vocab import TokenStringError

    layout = layout or default_layout(tokenizers)
    try:
        layout.parse(text, strict=True)
    except TokenStringError as e:
        log.warning(f"malformed token string: {e}; decoding the valid parts")
    writer, items = _Writer(Path(out_dir)), []
    media_pieces = [(kind, val) for kind, val in layout.parse(text, strict=False) if kind != "text"]
    if not media_pieces:
        log.warning("no media spans found in the text")
    for i, (modality, codes) in enumerate(media_pieces):
        tok = tokenizers.get(modality)
        if tok is None:
            log.warning(f"span {i}: no tokenizer for {modality}; give --tokenizer {modality}=CARD")
            continue
        items.append(decode_one(tok, codes, f"{stem}-{i}-{modality}", writer))
    _write_index(Path(out_dir), items)
    return items
