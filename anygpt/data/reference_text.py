"""The token ids the reference would produce: transformers 4.34's slow ``LlamaTokenizer`` on whole strings.

The reference (OpenMOSS/AnyGPT) built each prompt as one string (``[Human]: … <eoh>\\n[MMGPT]:``,
media written as ``<soim><👀12>…<eoim>``) and called the slow LLaMA tokenizer of transformers 4.34
on it. That tokenizer splits the string at every added token and runs sentencepiece on each text
chunk between them, so the ids around markers depend on the ``legacy`` setting:

- ``legacy=True`` (4.34's default when the config says nothing): each chunk is encoded with
  sentencepiece's dummy prefix, so ``[Human]: hi`` gives ``[Human]`` ``▁:`` ``▁hi``, the ``\\n``
  after ``<eoh>`` gives ``▁`` ``<0x0A>`` and the space in ``<eoh> [MMGPT]`` gives ``▁▁``.
- ``legacy=False``: the dummy prefix is switched off in the sentencepiece model and one ``▁`` is
  put before the whole string instead, so ``[Human]: hi`` gives ``▁`` ``[Human]`` ``:`` ``▁hi``
  (a lone ``▁`` after ``<s>`` when the string opens with a marker), ``\\n`` gives ``<0x0A>`` and
  a chunk that starts with a space is encoded as ``<unk>`` + chunk with the ``<unk>`` pieces cut.

:class:`ReferenceTextEncoder` reproduces both from the ``tokenizer.model`` of the released directory
(this project's transformers no longer ships the slow tokenizer). The reference templates in
:mod:`anygpt.data.templates` use it whenever the tokenizer's directory holds a ``tokenizer.model``;
labels are still decided per piece, from ids (each token takes the label of the piece that holds
its first character), never from string lengths.

``legacy`` is read from the directory's ``tokenizer_config.json`` (key ``legacy``; absent or null
means True, what 4.34 did); :func:`carry_reference_text_files` copies the model and the setting
into a bundle written by ``anygpt convert``, ``anygpt vocab --out`` or a training export.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

SPIECE_UNDERLINE = "\u2581"
SP_MODEL_FILE = "tokenizer.model"
TOKENIZER_CONFIG = "tokenizer_config.json"
# Added tokens of the usual shapes ([Human], <eoh>, <👀12>, <|user|>); others are matched literally.
_ADDED_SHAPE = re.compile(r"\[[^\[\]\s]+\]|<[^<>\s]+>")
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


@dataclass
class _Part:
    """A stretch of the prompt string: text (with a loss flag per character) or one added token."""

    text: str
    flags: list[bool]
    token_id: int | None = None  # set for an added token

    def stripped(self, left: bool) -> "_Part":
        """The text with its leading (``left``) or trailing whitespace removed, flags alike."""
        text = self.text.lstrip() if left else self.text.rstrip()
        cut = len(self.text) - len(text)
        return _Part(text, self.flags[cut:] if left else self.flags[:len(text)])


@dataclass
class ReferenceTextEncoder:
    """4.34 slow ``LlamaTokenizer`` semantics over a sentencepiece model and a table of added tokens.

    ``added`` maps every added token (the layout's markers and codes, and ``<s>``/``</s>``/``<unk>``,
    which 4.34 also kept whole) to its id; ``special`` holds the ids of 4.34's
    ``all_special_tokens`` (bos, eos, unk): only before those is the non-legacy leading ``▁`` dropped."""

    sp_model_file: Path
    added: dict[str, int]
    special: frozenset[int]
    legacy: bool = True
    unk_token: str = "<unk>"
    # ids of added tokens that eat the whitespace on their left / right (AddedToken lstrip / rstrip)
    lstrip: frozenset[int] = frozenset()
    rstrip: frozenset[int] = frozenset()
    _sp: Any = field(default=None, repr=False)
    _unk_len: int = field(default=0, repr=False)
    _literal: Any = field(default=None, repr=False)
    _dummy: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        self.sp_model_file = Path(self.sp_model_file)
        data = self.sp_model_file.read_bytes()
        proto = pb.ModelProto.FromString(data)
        self._dummy = int(self.legacy and proto.normalizer_spec.add_dummy_prefix)
        if not self.legacy:
            # 4.34 LlamaTokenizer.get_spm_processor: the model's dummy prefix is switched off
            proto.normalizer_spec.add_dummy_prefix = False
            data = proto.SerializeToString()
        self._sp = spm.SentencePieceProcessor()
        self._sp.LoadFromSerializedProto(data)
        self._unk_len = len(self._sp.encode(self.unk_token, out_type=str))
        odd = sorted((t for t in self.added if not _ADDED_SHAPE.fullmatch(t)), key=len, reverse=True)
        self._literal = re.compile("|".join(map(re.escape, odd))) if odd else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_directory(cls, directory: str | os.PathLike, tokenizer: Any) -> "ReferenceTextEncoder | None":
        """The encoder for a tokenizer directory, or None when it holds no ``tokenizer.model``."""
        d = Path(directory)
        if not (d / SP_MODEL_FILE).is_file():
            return None
        added = dict(tokenizer.get_added_vocab())
        special = set()
        for name in ("bos_token", "eos_token", "unk_token"):
            tok = getattr(tokenizer, name)
            if tok is not None:
                added.setdefault(str(tok), tokenizer.convert_tokens_to_ids(str(tok)))
                special.add(added[str(tok)])
        lstrip, rstrip = read_strip_flags(d)
        return cls(d / SP_MODEL_FILE, added, frozenset(special), read_legacy(d), str(tokenizer.unk_token or "<unk>"),
                   lstrip, rstrip)

    # ------------------------------------------------------------------ encoding
    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """``tokenizer(text).input_ids`` of the 4.34 slow tokenizer (bos added, no eos)."""
        ids, _ = self.encode_pieces([(text, False)])
        bos = self.added.get("<s>", self._sp.bos_id())
        return ([bos] if add_bos else []) + ids

    def encode_pieces(self, pieces: Sequence[tuple[str | list[int], bool]]) -> tuple[list[int], list[bool]]:
        """Ids of the string made by joining ``pieces``, and per id the flag of its piece.

        A piece is ``(text, flag)`` or ``(ids, flag)``; ids stand for added tokens written in
        the string (markers, media spans) and are kept as they are. No bos is added."""
        parts = self._parts(pieces)
        out_ids: list[int] = []
        out_flags: list[bool] = []
        if not self.legacy and parts:
            # 4.34 tokenize(): "▁" + text (with "▁" in the text read as a space)
            for p in parts:
                if p.token_id is None:
                    p.text = p.text.replace(SPIECE_UNDERLINE, " ")
            if parts[0].token_id is None:
                parts[0] = _Part(SPIECE_UNDERLINE + parts[0].text, parts[0].flags[:1] + parts[0].flags)
            else:
                parts.insert(0, _Part(SPIECE_UNDERLINE, [parts[0].flags[0]]))
        # AddedToken rstrip / lstrip: the token eats the whitespace on that side (4.34.1 creates the
        # reference's tokens without either; a config saved by 4.34.0 marks them with both)
        for i, p in enumerate(parts):
            if p.token_id is None:
                continue
            if p.token_id in self.rstrip and i + 1 < len(parts) and parts[i + 1].token_id is None:
                parts[i + 1] = parts[i + 1].stripped(left=True)
            if p.token_id in self.lstrip and i > 0 and parts[i - 1].token_id is None:
                parts[i - 1] = parts[i - 1].stripped(left=False)
        parts = [p for p in parts if p.token_id is not None or p.text]
        for p in parts:
            if p.token_id is not None:
                out_ids.append(p.token_id)
                out_flags.append(p.flags[0])
            else:
                ids, flags = self._tokenize_chunk(p)
                out_ids += ids
                out_flags += flags
        if (not self.legacy and len(out_ids) > 1 and out_ids[0] == self._sp.piece_to_id(SPIECE_UNDERLINE)
                and out_ids[1] in self.special):
            out_ids, out_flags = out_ids[1:], out_flags[1:]
        return out_ids, out_flags

    def _parts(self, pieces: Sequence[tuple[str | list[int], bool]]) -> list[_Part]:
        """Join text pieces, split at added tokens (4.34's trie split: leftmost, longest)."""
        parts: list[_Part] = []
        text, flags = "", []

        def flush() -> None:
            nonlocal text, flags
            pos = 0
            for start, end, tid in self._added_spans(text):
                if start > pos:
                    parts.append(_Part(text[pos:start], flags[pos:start]))
                parts.append(_Part(text[start:end], [flags[start]], tid))
                pos = end
            if pos < len(text):
                parts.append(_Part(text[pos:], flags[pos:]))
            text, flags = "", []

        for value, flag in pieces:
            if isinstance(value, str):
                text += value
                flags += [flag] * len(value)
            else:
                flush()
                parts += [_Part("", [flag], int(i)) for i in value]
        flush()
        return parts

    def _added_spans(self, text: str) -> list[tuple[int, int, int]]:
        spans = []
        for rx in (_ADDED_SHAPE, self._literal):
            if rx is None:
                continue
            for m in rx.finditer(text):
                if m.group(0) in self.added:
                    spans.append((m.start(), m.end(), self.added[m.group(0)]))
        spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        out, end = [], 0
        for s in spans:  # leftmost first, the longest at a position, no overlaps
            if s[0] >= end:
                out.append(s)
                end = s[1]
        return out

    def _tokenize_chunk(self, part: _Part) -> tuple[list[int], list[bool]]:
        """4.34 ``LlamaTokenizer._tokenize`` on one chunk, with each piece's source character."""
        text = part.text
        if self.legacy or not text.startswith((SPIECE_UNDERLINE, " ")):
            pieces = self._sp.encode(text, out_type=str)
        else:
            pieces = self._sp.encode(self.unk_token + text, out_type=str)
            pieces = pieces[self._unk_len:] if len(pieces) >= self._unk_len else pieces
        # walk the normalised chunk (dummy "▁" first under legacy) to find each piece's first character
        dummy = self._dummy
        chars = [" "] * dummy + list(text)
        pos, byte_left, flags = 0, 0, []
        for piece in pieces:
            src = min(max(pos - dummy, 0), len(text) - 1)
            flags.append(part.flags[src])
            if _BYTE_PIECE.fullmatch(piece):
                if byte_left == 0 and pos < len(chars):
                    byte_left = len(chars[pos].encode("utf-8"))
                byte_left -= 1
                if byte_left <= 0:
                    pos, byte_left = pos + 1, 0
            else:
                pos += len(piece)
        return [self._sp.piece_to_id(p) for p in pieces], flags


def read_legacy(directory: str | os.PathLike) -> bool:
    """The ``legacy`` flag of a slow-tokenizer directory; absent or null is True, as in 4.34."""
    cfg = Path(directory) / TOKENIZER_CONFIG
    if not cfg.is_file():
        return True
    try:
        value = json.loads(cfg.read_text(encoding="utf-8")).get("legacy")
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{cfg}: not a JSON object") from None
    return True if value is None else bool(value)


def read_strip_flags(directory: str | os.PathLike) -> tuple[frozenset[int], frozenset[int]]:
    """Ids whose ``added_tokens_decoder`` entry in ``tokenizer_config.json`` sets ``lstrip`` /
    ``rstrip``; none when the file has no such table (4.34.1 reads ``added_tokens.json`` without)."""
    cfg = Path(directory) / TOKENIZER_CONFIG
    if not cfg.is_file():
        return frozenset(), frozenset()
    table = json.loads(cfg.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
    try:
        lstrip = frozenset(int(i) for i, t in table.items() if isinstance(t, dict) and t.get("lstrip"))
        rstrip = frozenset(int(i) for i, t in table.items() if isinstance(t, dict) and t.get("rstrip"))
    except ValueError:
        raise ValueError(f"{cfg}: added_tokens_decoder keys must be token ids") from None
    return lstrip, rstrip


_CACHE: dict[tuple[str, float, float], "ReferenceTextEncoder | None"] = {}
_WARNED: set[str] = set()


def encoder_for(tokenizer: Any) -> "ReferenceTextEncoder | None":
    """The reference encoder for a tokenizer loaded from a directory (cached), or None when that
    directory has no ``tokenizer.model`` (a warning says the ids are then only close)."""
    d = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    model = d / SP_MODEL_FILE
    if not model.is_file():
        if str(d) not in _WARNED:
            _WARNED.add(str(d))
            log.warning(f"{d}: no {SP_MODEL_FILE}; the reference templates tokenize piece by piece, which can differ "
                        "from the reference's ids around markers")
        return None
    cfg = d / TOKENIZER_CONFIG
    key = (str(d.resolve()), model.stat().st_mtime, cfg.stat().st_mtime if cfg.exists() else 0.0)
    if key not in _CACHE:
        _CACHE[key] = ReferenceTextEncoder.from_directory(d, tokenizer)
    return _CACHE[key]


def carry_reference_text_files(src: str | os.PathLike, out: str | os.PathLike) -> bool:
    """Copy ``tokenizer.model`` from ``src`` to ``out`` and record ``src``'s ``legacy`` flag in
    ``out``'s ``tokenizer_config.json`` (current transformers writes neither), so that the bundle
    renders the reference's ids too. Returns whether there was a model to carry."""
    src, out = Path(src), Path(out)
    if not (src / SP_MODEL_FILE).is_file() or src.resolve() == out.resolve():
        return False
    shutil.copyfile(src / SP_MODEL_FILE, out / SP_MODEL_FILE)
    cfg = out / TOKENIZER_CONFIG
    data = json.loads(cfg.read_text(encoding="utf-8")) if cfg.is_file() else {}
    data["legacy"] = read_legacy(src)
    from anygpt.utils import atomic_write_text

    atomic_write_text(cfg, json.dumps(data, ensure_ascii=False, indent=2))
    return True
