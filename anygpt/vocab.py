"""VocabLayout: the one source of truth for added tokens and id ranges.

A multimodal LLM here is an unchanged text LLM whose vocabulary is extended with
special markers and, per modality, a contiguous block of code tokens followed by that
modality's start and end markers. Codes map to ids by arithmetic (``first_id + code``),
never by tokenizing strings; token strings (``<soim><👀12>…<eoim>``) exist only for
interchange with the reference system's data files.

The ``anygpt`` profile reproduces the reference exactly: on LLaMA-2's 32,000-entry
vocabulary it yields ids 32000–49417 (49,420 with the chat stage's ``<-Res->`` and
``<-Ins->``, profile ``anygpt-chat``).

Example::

    layout = VocabLayout.from_profile("anygpt", base_vocab_size=len(tok))
    layout.grow_tokenizer(tok)
    layout.grow_model(model)          # mean-initialised rows, padded to a multiple of 64
    ids = layout.span_ids("image", [12, 7])   # [<soim>, 12+off, 7+off, <eoim>]
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

LAYOUT_FILE = "anygpt_layout.json"

# Reference token prefixes (U+1F440, U+1F5E3 U+FE0F, U+1F3B6).
IMAGE_PREFIX = "\U0001F440"
SPEECH_PREFIX = "\U0001F5E3\uFE0F"
MUSIC_PREFIX = "\U0001F3B6"


class TokenStringError(ValueError):
    """A malformed modality span in a token string (unclosed, foreign code, out of range)."""


@dataclass(frozen=True)
class ModalitySpec:
    """One modality's block in the vocabulary: ``size`` code tokens then ``start``, ``end``."""

    name: str
    size: int
    prefix: str
    start: str
    end: str

    def code_token(self, code: int) -> str:
        return f"<{self.prefix}{code}>"

    def tokens(self) -> list[str]:
        return [self.code_token(i) for i in range(self.size)] + [self.start, self.end]


def _reference_modalities(image: int = 8192, speech: int = 1024, music: int = 8192) -> list[ModalitySpec]:
    return [
        ModalitySpec("image", image, IMAGE_PREFIX, "<soim>", "<eoim>"),
        ModalitySpec("speech", speech, SPEECH_PREFIX, "<sosp>", "<eosp>"),
        ModalitySpec("music", music, MUSIC_PREFIX, "<somu>", "<eomu>"),
    ]


# Profiles: which markers come first, which come after the modality blocks.
# "anygpt" / "anygpt-chat" are the reference's strings and order; "default" is ours: every role and
# end-of-turn marker is one token, so masks are computed from ids and never from string lengths.
PROFILES: dict[str, dict] = {
    "anygpt": {"specials": ["[Human]", "[MMGPT]", "<eoh>", "<eos>"], "extra": []},
    "anygpt-chat": {"specials": ["[Human]", "[MMGPT]", "<eoh>", "<eos>"], "extra": ["<-Res->", "<-Ins->"]},
    "default": {"specials": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "extra": ["<-Res->", "<-Ins->"]},
}


@dataclass
class VocabLayout:
    """Added tokens and their id ranges on top of a base tokenizer of ``base_vocab_size`` entries."""

    profile: str
    base_vocab_size: int
    specials: list[str]
    modalities: list[ModalitySpec]
    extra: list[str] = field(default_factory=list)
    pad_to_multiple: int = 64

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_profile(
        cls,
        profile: str,
        base_vocab_size: int,
        sizes: dict[str, int] | None = None,
        pad_to_multiple: int = 64,
    ) -> "VocabLayout":
        """Build a layout from a named profile; ``sizes`` overrides per-modality codebook sizes
        (a modality given size 0 is left out)."""
        if profile not in PROFILES:
            raise ValueError(f"unknown vocab profile {profile!r}; known: {', '.join(sorted(PROFILES))}")
        mods = _reference_modalities()
        if sizes:
            unknown = set(sizes) - {m.name for m in mods}
            if unknown:
                raise ValueError(f"unknown modality {sorted(unknown)}; known: image, speech, music")
            mods = [ModalitySpec(m.name, sizes.get(m.name, m.size), m.prefix, m.start, m.end) for m in mods]
            mods = [m for m in mods if m.size > 0]
        spec = PROFILES[profile]
        return cls(profile, int(base_vocab_size), list(spec["specials"]), mods, list(spec["extra"]), pad_to_multiple)

    # ---------------------------------------------------------------- ids
    def added_tokens(self) -> list[str]:
        """Every added token string, in id order."""
        out = list(self.specials)
        for m in self.modalities:
            out.extend(m.tokens())
        return out + list(self.extra)

    @property
    def vocab_size(self) -> int:
        """Tokenizer length after growth (unpadded)."""
        return self.base_vocab_size + len(self.specials) + sum(m.size + 2 for m in self.modalities) + len(self.extra)

    @property
    def padded_vocab_size(self) -> int:
        """Embedding rows: vocab_size rounded up; the padding ids belong to no range and are never sampled."""
        k = max(1, self.pad_to_multiple)
        return int(math.ceil(self.vocab_size / k) * k)

    def _offsets(self) -> dict[str, int]:
        off, nxt = {}, self.base_vocab_size + len(self.specials)
        for m in self.modalities:
            off[m.name] = nxt
            nxt += m.size + 2
        return off

    def modality(self, name: str) -> ModalitySpec:
        for m in self.modalities:
            if m.name == name:
                return m
        raise KeyError(f"modality {name!r} is not in this layout; it has: {', '.join(self.modality_names)}")

    @property
    def modality_names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def code_range(self, modality: str) -> range:
        """Ids of modality codes (markers excluded)."""
        first = self._offsets()[self.modality(modality).name]
        return range(first, first + self.modality(modality).size)

    def start_id(self, modality: str) -> int:
        r = self.code_range(modality)
        return r.stop

    def end_id(self, modality: str) -> int:
        return self.code_range(modality).stop + 1

    def token_id(self, token: str) -> int:
        """Id of a special/extra/marker token of this layout (not of text)."""
        ids = self._marker_ids()
        if token not in ids:
            raise KeyError(f"{token!r} is not a marker of layout profile {self.profile!r}")
        return ids[token]

    def _marker_ids(self) -> dict[str, int]:
        ids = {t: self.base_vocab_size + i for i, t in enumerate(self.specials)}
        for m in self.modalities:
            ids[m.start] = self.start_id(m.name)
            ids[m.end] = self.end_id(m.name)
        base = self.vocab_size - len(self.extra)
        ids.update({t: base + i for i, t in enumerate(self.extra)})
        return ids

    def marker_ids(self) -> set[int]:
        return set(self._marker_ids().values())

    def codes_to_ids(self, modality: str, codes: Iterable[int]) -> list[int]:
        r = self.code_range(modality)
        out = []
        for c in codes:
            c = int(c)
            if not 0 <= c < len(r):
                raise ValueError(f"{modality} code {c} outside [0, {len(r)})")
            out.append(r.start + c)
        return out

    def ids_to_codes(self, modality: str, ids: Iterable[int]) -> list[int]:
        r = self.code_range(modality)
        out = []
        for i in ids:
            i = int(i)
            if i not in r:
                raise ValueError(f"id {i} is not a {modality} code (range {r.start}..{r.stop - 1})")
            out.append(i - r.start)
        return out

    def span_ids(self, modality: str, codes: Iterable[int]) -> list[int]:
        """``[<so..>] + code ids + [<eo..>]``."""
        return [self.start_id(modality), *self.codes_to_ids(modality, codes), self.end_id(modality)]

    def modality_of_id(self, token_id: int) -> str | None:
        """The modality whose code range holds ``token_id``, else None."""
        for m in self.modalities:
            if token_id in self.code_range(m.name):
                return m.name
        return None

    def split_ids(self, ids: Sequence[int]) -> list[tuple[str, list[int]]]:
        """Split generated ids into ``("text", ids)`` and ``(modality, codes)`` pieces.

        Lenient: an unclosed span is closed at the end; codes of a foreign modality inside a span
        are dropped (the caller can compare lengths to warn)."""
        out: list[tuple[str, list[int]]] = []
        starts = {self.start_id(m): m for m in self.modality_names}
        ends = {self.end_id(m): m for m in self.modality_names}
        cur: str | None = None
        buf: list[int] = []
        for t in ids:
            t = int(t)
            if cur is None:
                if t in starts:
                    if buf:
                        out.append(("text", buf))
                    cur, buf = starts[t], []
                else:
                    buf.append(t)
            elif t in ends or t in starts:
                out.append((cur, buf))
                cur, buf = None, []
                if t in starts:
                    cur = starts[t]
            elif t in self.code_range(cur):
                buf.append(t - self.code_range(cur).start)
        if cur is not None:
            out.append((cur, buf))
        elif buf:
            out.append(("text", buf))
        return out

    # ---------------------------------------------------------------- strings (interchange)
    def codes_to_string(self, modality: str, codes: Iterable[int]) -> str:
        """``<soim><👀12><👀7><eoim>``: the reference's pretokenized form, no spaces."""
        m = self.modality(modality)
        body = "".join(m.code_token(int(c)) for c in codes)
        return f"{m.start}{body}{m.end}"

    def parse(self, text: str, strict: bool = True) -> list[tuple[str, str | list[int]]]:
        """Split a string into ``("text", str)`` and ``(modality, codes)`` pieces.

        Tolerates whitespace between tokens inside a span (slow tokenizers insert it when
        decoding). ``strict`` raises :class:`TokenStringError` naming the position and reason on
        an unclosed span, a foreign or out-of-range code, or stray text inside a span; with
        ``strict=False`` bad pieces are dropped and the best valid output is returned."""
        pieces: list[tuple[str, str | list[int]]] = []
        pos = 0
        starts = {m.start: m for m in self.modalities}
        start_re = re.compile("|".join(re.escape(s) for s in starts)) if starts else None
        while start_re is not None:
            mt = start_re.search(text, pos)
            if mt is None:
                break
            if mt.start() > pos:
                pieces.append(("text", text[pos : mt.start()]))
            m = starts[mt.group(0)]
            end = text.find(m.end, mt.end())
            if end < 0:
                if strict:
                    raise TokenStringError(f"unclosed {m.name} span starting at character {mt.start()}: no {m.end}")
                end_body = len(text)
                nxt = len(text)
            else:
                end_body, nxt = end, end + len(m.end)
            codes = self._parse_body(m, text[mt.end() : end_body], mt.end(), strict)
            pieces.append((m.name, codes))
            pos = nxt
        if pos < len(text):
            pieces.append(("text", text[pos:]))
        if strict:
            for kind, val in pieces:
                if kind == "text":
                    for other in self.modalities:
                        if other.end in val:
                            raise TokenStringError(f"{other.end} without a matching {other.start}")
        return pieces

    def _parse_body(self, m: ModalitySpec, body: str, offset: int, strict: bool) -> list[int]:
        token_re = re.compile(r"<([^<>]+?)>")
        codes: list[int] = []
        i = 0
        for tm in token_re.finditer(body):
            gap = body[i : tm.start()]
            i = tm.end()
            if gap.strip():
                if strict:
                    raise TokenStringError(f"text {gap.strip()[:20]!r} inside {m.name} span at character {offset + tm.start()}")
                continue
            inner = tm.group(1)
            digits = inner[len(m.prefix) :]
            # ASCII digits only: str.isdigit() also accepts "²" (int() fails) and "٣" (not our token)
            if not inner.startswith(m.prefix) or not (digits.isascii() and digits.isdigit()):
                if strict:
                    raise TokenStringError(f"token <{inner}> is not a {m.name} code (at character {offset + tm.start()})")
                continue
            code = int(digits)
            if code >= m.size:
                if strict:
                    raise TokenStringError(f"{m.name} code {code} out of range [0, {m.size}) at character {offset + tm.start()}")
                continue
            codes.append(code)
        if body[i:].strip() and strict:
            raise TokenStringError(f"text {body[i:].strip()[:20]!r} inside {m.name} span")
        return codes

    # ---------------------------------------------------------------- growth
    def grow_tokenizer(self, tokenizer) -> None:
        """Add this layout's tokens to a Hugging Face tokenizer (in place) and check the ids.

        Raises if the tokenizer's length is not ``base_vocab_size`` or if any added token already
        existed (its id would break the arithmetic ranges)."""
        n = len(tokenizer)
        if n == self.vocab_size and tokenizer.convert_tokens_to_ids(self.added_tokens()[-1]) == self.vocab_size - 1:
            return  # already grown with this layout
        if n != self.base_vocab_size:
            raise ValueError(f"tokenizer has {n} entries but the layout expects a base of {self.base_vocab_size}")
        tokens = self.added_tokens()
        vocab = tokenizer.get_vocab()
        clash = [t for t in tokens if t in vocab]
        if clash:
            raise ValueError(f"tokens already in the base vocabulary: {clash[:5]}; choose another profile")
        # Markers are special (never split, kept whole when decoding); codes are plain added tokens
        # exactly as the reference added them.
        tokenizer.add_tokens(tokens, special_tokens=False)
        got = tokenizer.convert_tokens_to_ids([tokens[0], tokens[-1]])
        if got != [self.base_vocab_size, self.vocab_size - 1] or len(tokenizer) != self.vocab_size:
            raise RuntimeError(f"tokenizer assigned ids {got}, expected {[self.base_vocab_size, self.vocab_size - 1]}")

    def grow_model(self, model, mean_init: bool = True, gather=None) -> None:
        """Resize input/output embeddings to ``padded_vocab_size``; new rows (codes, markers and
        padding) get the mean of the old rows. Call before DeepSpeed wraps the model.

        A model whose embeddings already hold the layout (at least ``vocab_size`` rows: a
        released AnyGPT-chat checkpoint has exactly 49,420, one of ours is padded to a multiple
        of 64) is left as it is: its rows past ``vocab_size`` belong to no range and are never
        sampled. A model with more rows than the base vocabulary but fewer than the layout needs
        was grown with another layout, and is refused.

        ``gather(params)``: a context in which partitioned parameters are whole (ZeRO-3 models;
        Hugging Face's resize gathers by itself)."""
        import contextlib

        import torch

        emb = model.get_input_embeddings()
        old = emb.num_embeddings  # the full row count even when the weight is partitioned
        if old >= self.vocab_size:
            return
        if old != self.base_vocab_size:
            raise ValueError(f"model has {old} embedding rows; the {self.profile} layout needs the base vocabulary "
                             f"({self.base_vocab_size} rows, grown here) or at least its {self.vocab_size} entries")
        model.resize_token_embeddings(self.padded_vocab_size, mean_resizing=False)
        if mean_init:
            weights = {id(p): p for p in (model.get_input_embeddings().weight,
                                          getattr(model.get_output_embeddings(), "weight", None)) if p is not None}
            for w in weights.values():
                with (gather([w]) if gather else contextlib.nullcontext()), torch.no_grad():
                    w[old:] = w[:old].float().mean(0).to(w.dtype)
        model.config.vocab_size = self.padded_vocab_size

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        d = asdict(self)
        d["vocab_size"] = self.vocab_size
        d["padded_vocab_size"] = self.padded_vocab_size
        d["ranges"] = {m.name: [self.code_range(m.name).start, self.code_range(m.name).stop - 1] for m in self.modalities}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VocabLayout":
        mods = [ModalitySpec(**m) for m in d["modalities"]]
        layout = cls(d["profile"], d["base_vocab_size"], list(d["specials"]), mods, list(d.get("extra", [])), d.get("pad_to_multiple", 64))
        if "vocab_size" in d and d["vocab_size"] != layout.vocab_size:
            raise ValueError(f"layout file says vocab_size {d['vocab_size']}, recomputed {layout.vocab_size}")
        layout.validate()
        return layout

    def validate(self) -> None:
        """Raise ``ValueError`` unless every marker is its own token: modality names, code prefixes
        and start/end markers distinct, and no start/end marker equal to a role or extra marker (a
        speech start renamed ``<|user|>`` would make every speech span open a user turn)."""
        problems: list[str] = []
        names = [m.name for m in self.modalities]
        prefixes = [m.prefix for m in self.modalities]
        for what, vals in (("modality names", names), ("code prefixes", prefixes)):
            dup = sorted({v for v in vals if vals.count(v) > 1})
            if dup:
                problems.append(f"repeated {what} {dup}")
        roles = set(self.specials) | set(self.extra)
        seen: dict[str, str] = {}
        for m in self.modalities:
            if m.size <= 0:
                problems.append(f"{m.name} has {m.size} codes")
            for kind, tok in (("start", m.start), ("end", m.end)):
                if not tok:
                    problems.append(f"{m.name} {kind} marker is empty")
                elif tok in roles:
                    problems.append(f"{m.name} {kind} marker {tok} is also a role marker")
                elif tok in seen:
                    problems.append(f"{m.name} {kind} marker {tok} is also the {seen[tok]} marker")
                seen.setdefault(tok, f"{m.name} {kind}")
        markers = list(self.specials) + list(self.extra)
        dup = sorted({v for v in markers if markers.count(v) > 1})
        if dup:
            problems.append(f"repeated role markers {dup}")
        if problems:
            raise ValueError("invalid vocab layout: " + "; ".join(problems))

    def save(self, directory: str | os.PathLike) -> Path:
        from anygpt.utils import atomic_write_text

        path = Path(directory) / LAYOUT_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VocabLayout":
        p = Path(path)
        if p.is_dir():
            p = p / LAYOUT_FILE
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: no vocab layout (expected {LAYOUT_FILE})") from None
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: not a valid vocab layout ({e})") from None
        except ValueError as e:  # validate() and the size check: name the file
            raise ValueError(f"{p}: {e}") from None

    @classmethod
    def detect(cls, tokenizer) -> "VocabLayout | None":
        """Recognise the reference's layout from a grown tokenizer (e.g. a released AnyGPT
        checkpoint that ships no layout file); None when it is not one."""
        vocab = tokenizer.get_vocab()
        if "[MMGPT]" not in vocab or f"<{IMAGE_PREFIX}0>" not in vocab:
            return None
        base = vocab["[Human]"]
        profile = "anygpt-chat" if "<-Res->" in vocab else "anygpt"
        layout = cls.from_profile(profile, base)
        for t in ("<eoim>", "<eosp>", "<eomu>"):
            if vocab.get(t) != layout._marker_ids()[t]:
                return None
        return layout

    def describe(self) -> str:
        lines = [f"profile {self.profile}: base {self.base_vocab_size}, grown {self.vocab_size}, padded {self.padded_vocab_size}"]
        for t, i in self._marker_ids().items():
            if t in self.specials or t in self.extra:
                lines.append(f"  {i:>7}  {t}")
        for m in self.modalities:
            r = self.code_range(m.name)
            lines.append(f"  {r.start:>7}-{r.stop - 1:<7} {m.name} codes {m.code_token(0)}…{m.code_token(m.size - 1)} ({m.size})")
            lines.append(f"  {self.start_id(m.name):>7}  {m.start}   {self.end_id(m.name):>7}  {m.end}")
        return "\n".join(lines)


def load_base_tokenizer(path: str | os.PathLike):
    """A Hugging Face tokenizer from a directory, a sentencepiece ``.model`` file, or a hub id.

    A bare sentencepiece model is read by :func:`sentencepiece_tokenizer` (its own settings). Hub ids are tried only when
    the name is not a local path (and fail at once under ``HF_HUB_OFFLINE=1``)."""
    from transformers import AutoTokenizer

    p = Path(path)
    if p.is_file() and p.suffix == ".model":
        return sentencepiece_tokenizer(p)
    if p.is_dir():
        from anygpt.utils import refuse_remote_code

        refuse_remote_code(p)
        if (p / "tokenizer_config.json").exists() or (p / "tokenizer.json").exists():
            return AutoTokenizer.from_pretrained(str(p), trust_remote_code=False)
        if (p / "tokenizer.model").exists():
            return sentencepiece_tokenizer(p / "tokenizer.model")
        raise FileNotFoundError(f"{p}: no tokenizer files (tokenizer.json, tokenizer_config.json or tokenizer.model)")
    if p.exists() or str(path).startswith((".", "/")):
        raise FileNotFoundError(f"{p}: not a tokenizer directory or sentencepiece .model file")
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)  # a hub id


def sentencepiece_tokenizer(model_file: str | os.PathLike):
    """A fast Hugging Face tokenizer that encodes like ``SentencePieceProcessor.encode`` on
    ``model_file``: the model's own type (unigram or BPE), normaliser, unknown piece and byte
    fallback. (``LlamaTokenizer.from_pretrained`` on a bare ``.model`` rebuilds it as a BPE with
    byte fallback assumed and no unknown token, so a model trained without byte fallback silently
    dropped every character it had not seen: "ZEBRA" → "RA", issue 15.) Text the model cannot
    represent becomes its unknown piece, visible in the ids and counted by ``build-data``.
    No beginning-of-sequence token is added by ``encode``: the chat templates add it."""
    from sentencepiece import sentencepiece_model_pb2
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    path = Path(model_file)
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # a truncated or foreign file: one line naming it
        raise ValueError(f"{path}: not a sentencepiece model ({e})") from None
    spec = proto.trainer_spec
    if spec.model_type == 1:  # unigram: pieces with scores
        vocab: Any = [(piece.piece, piece.score) for piece in proto.pieces]
    elif spec.model_type == 2:  # BPE: merges ranked by piece score
        vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    else:
        raise ValueError(f"{path}: sentencepiece model type {spec.model_type} (word/char) is not supported; train it as unigram or bpe")
    # legacy=True: the dummy prefix goes on every text chunk, as ``SentencePieceProcessor.encode`` puts it on every
    # text. legacy=False prepends it only where the chunk starts at offset 0 of the original string, so text with
    # leading spaces (stripped before the prefix) lost its "▁" and its ids differed from sentencepiece's.
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    def piece(i: int) -> str | None:
        return proto.pieces[i].piece if 0 <= i < len(proto.pieces) else None

    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=piece(spec.unk_id), bos_token=piece(spec.bos_id),
                                  eos_token=piece(spec.eos_id), pad_token=piece(spec.pad_id), clean_up_tokenization_spaces=False)
    return tok


def text_coverage(tokenizer, texts: Iterable[str]) -> dict[str, int]:
    """How much of ``texts`` the tokenizer cannot represent: ``{"texts", "chars", "unknown_tokens",
    "texts_with_unknown", "lost_chars"}``. ``unknown_tokens`` counts unknown-piece ids;
    ``lost_chars`` the characters missing from the decoded text (after whitespace is collapsed),
    which is what a tokenizer that silently drops text loses."""
    unk = tokenizer.unk_token_id
    out = {"texts": 0, "chars": 0, "unknown_tokens": 0, "texts_with_unknown": 0, "lost_chars": 0}
    for t in texts:
        ids = tokenizer.encode(t, add_special_tokens=False)
        n_unk = sum(1 for i in ids if i == unk) if unk is not None else 0
        back = tokenizer.decode(ids, skip_special_tokens=True)
        a, b = "".join(t.split()), "".join(back.split())
        out["texts"] += 1
        out["chars"] += len(a)
        out["unknown_tokens"] += n_unk
        out["texts_with_unknown"] += int(n_unk > 0 or a != b)
        out["lost_chars"] += 0 if a == b else max(len(a) - _common_chars(a, b), 0)
    return out


def _common_chars(a: str, b: str) -> int:
    """Characters of ``a`` found, in order, in ``b`` (a cheap lower bound of the kept text)."""
    import difflib

    return sum(m.size for m in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
