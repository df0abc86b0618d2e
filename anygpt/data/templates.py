"""Named, versioned prompt templates; one renderer for training samples and inference prompts.

A conversation is a list of :class:`Message` (role ``system`` / ``user`` / ``assistant``) whose
content is text, :class:`MediaCodes`, or a string carrying the reference's inline token strings
(``<soim><👀12>…<eoim>``), which is parsed. A template turns messages into *pieces* — text to
tokenize, marker ids, media code ids — and :meth:`Template.render` concatenates their ids. The
label mask is decided per piece, from ids, so it can never drift from the text the way the
reference's string-length arithmetic did (its SFT masked whole samples: loss 0, eval NaN).

Templates:

- ``chat`` (ours, layout profile ``default``): ``<|user|>…<|end|><|assistant|>…<|end|>``; every
  role and end marker is a single token.
- ``anygpt-pretrain``: the reference's pretraining pairs,
  ``[Human]: {instruction} {X}<eoh> [MMGPT]: {text}<eos></s>``.
- ``anygpt-chat``: the reference's chat format for its released checkpoints (``[MMGPT]``
  roles, system line, ``\\n`` between turns).

One module over the usual ~350 lines on purpose: :meth:`Template.render` is :class:`BatchRenderer`
on one conversation and the renderer walks the templates' pieces, so the two share one piece and
label model; split apart they would import each other.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import numpy as np

from anygpt.data.reference_text import ReferenceTextEncoder, encoder_for
from anygpt.vocab import IGNORE_INDEX, VocabLayout

# the reference chat's suffix when the user's turn carries speech (its task_prompts["Speech-Instruction"])
SPEECH_INSTRUCTION = "Please recognize the voice command and give reply and voice"

MMGPT_SYSTEM = (
    "You are an AI assistant named MMGPT who can understand and generate multimodal content, "
    "including text, speech, images and audio."
)


@dataclass(frozen=True)
class MediaCodes:
    """A modality span: modality-local codes (``0 <= code < layout size``)."""

    modality: str
    codes: tuple[int, ...]

    def __init__(self, modality: str, codes: Iterable[int]):
        object.__setattr__(self, "modality", modality)
        object.__setattr__(self, "codes", tuple(map(int, codes)))


Content = Union[str, MediaCodes, Sequence[Union[str, MediaCodes]]]


@dataclass
class Message:
    role: str  # "system" | "user" | "assistant"
    content: Content

    def __post_init__(self):
        if self.role not in ("system", "user", "assistant"):
            raise ValueError(f"unknown role {self.role!r}; expected system, user or assistant")


@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


# A piece: ("text", str) | ("id", int) | ("media", MediaCodes), and whether it carries loss.
@dataclass(slots=True)
class _Piece:
    kind: str
    value: object
    train: bool = False


def content_pieces(content: Content, layout: VocabLayout, train: bool) -> list[_Piece]:
    """Split message content into text and media pieces (inline token strings are parsed)."""
    items = [content] if isinstance(content, (str, MediaCodes)) else list(content)
    out: list[_Piece] = []
    for item in items:
        if isinstance(item, MediaCodes):
            out.append(_Piece("media", item, train))
        elif isinstance(item, str):
            for kind, val in layout.parse(item, strict=True):
                out.append(_Piece("text", val, train) if kind == "text" else _Piece("media", MediaCodes(kind, val), train))
        else:
            raise TypeError(f"message content item must be str or MediaCodes, got {type(item).__name__}")
    return [p for p in out if not (p.kind == "text" and p.value == "")]


@dataclass
class Template:
    """Base class; subclasses define how roles become pieces."""

    name: str = ""
    version: int = 1
    profile: str = ""  # the VocabLayout profile whose markers this template uses
    system: str | None = None  # default system message (used when none is given)
    add_bos: bool = True
    # the reference tokenized whole prompt strings; such templates render its exact ids (see render)
    reference_strings = False
    # whether an inference prompt for a media reply ends with the modality's start marker by default
    force_start = True

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    # -- to override
    def pieces(self, messages: Sequence[Message], layout: VocabLayout, loss_on: str) -> list[_Piece]:
        raise NotImplementedError

    def generation_pieces(self, layout: VocabLayout, force_modality: str | None) -> list[_Piece]:
        raise NotImplementedError

    def stop_token_ids(self, layout: VocabLayout, tokenizer) -> list[int]:
        raise NotImplementedError

    def suffix_ids(self, messages: Sequence[Message], tokenizer, loss_on: str,
                   add_generation_prompt: bool) -> list[int]:
        """Ids appended after the last piece (none by default); they carry loss unless ``loss_on`` is none."""
        return []

    def compose_user(self, media: Sequence[MediaCodes], text: str) -> list[Union[str, MediaCodes]]:
        """A user turn from attached media and typed text: the media, then the text."""
        return [*media, text] if text else list(media)

    # -- shared
    def render(
        self,
        messages: Sequence[Message],
        tokenizer,
        layout: VocabLayout,
        loss_on: str = "assistant",
        add_generation_prompt: bool = False,
        force_modality: str | None = None,
    ) -> Rendered:
        """Ids and labels for ``messages``.

        ``loss_on``: ``"assistant"`` (assistant content and its end marker carry loss), ``"all"``
        (every token, as the reference's pretraining), or ``"none"`` (an inference prompt).
        ``add_generation_prompt`` appends the assistant header (and ``force_modality``'s start
        marker) so that generation continues as the assistant. Many conversations at once:
        :class:`BatchRenderer` (the same ids, one tokenizer call per batch)."""
        _check_loss_on(loss_on)
        encoder = encoder_for(tokenizer) if self.reference_strings else None
        if encoder is None:
            return BatchRenderer(self, tokenizer, layout).render([messages], loss_on, add_generation_prompt,
                                                                 force_modality)[0]
        pieces: list[_Piece] = []
        if self.add_bos and tokenizer.bos_token_id is not None:
            pieces.append(_Piece("id", tokenizer.bos_token_id))
        pieces += self.pieces(list(messages), layout, loss_on)
        if add_generation_prompt:
            pieces += self.generation_pieces(layout, force_modality)
        r = self._render_reference(pieces, encoder, layout, loss_on)
        tail = self.suffix_ids(messages, tokenizer, loss_on, add_generation_prompt)
        return Rendered(r.input_ids + tail, r.labels + (tail if loss_on != "none" else [IGNORE_INDEX] * len(tail)))

    def _render_reference(self, pieces: list[_Piece], encoder: ReferenceTextEncoder, layout: VocabLayout,
                          loss_on: str) -> Rendered:
        """The ids the reference's slow tokenizer gives for the string these pieces spell (markers
        and media spans written as their token strings); each id keeps its piece's label."""
        lead: list[int] = []
        if self.add_bos and pieces and pieces[0].kind == "id" and pieces[0].value == encoder.added.get("<s>"):
            lead, pieces = [int(pieces[0].value)], pieces[1:]
        spelled: list[tuple[str | list[int], bool]] = []
        for p in pieces:
            if p.kind == "text":
                spelled.append((str(p.value), p.train))
            elif p.kind == "id":
                spelled.append(([int(p.value)], p.train))
            else:
                spelled.append((layout.span_ids(p.value.modality, p.value.codes), p.train))
        ids, flags = encoder.encode_pieces(spelled)
        labels = list(lead) if loss_on == "all" else [IGNORE_INDEX] * len(lead)
        for i, f in zip(ids, flags):
            labels.append(i if loss_on == "all" or (loss_on == "assistant" and f) else IGNORE_INDEX)
        return Rendered(lead + ids, labels)

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "profile": self.profile, "system": self.system}


def _check_roles(messages: Sequence[Message], name: str) -> None:
    body = [m for m in messages if m.role != "system"]
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m.role != want:
            raise ValueError(f"template {name}: turn {i} is {m.role!r}, expected {want!r} (turns alternate, user first)")


@dataclass
class ChatTemplate(Template):
    """Ours: ``[<|system|>sys<|end|>]<|user|>u<|end|><|assistant|>a<|end|>…``."""

    name: str = "chat"
    profile: str = "default"

    def pieces(self, messages, layout, loss_on):
        _check_roles(messages, self.name)
        end = layout.token_id("<|end|>")
        out: list[_Piece] = []
        sys_msgs = [m for m in messages if m.role == "system"]
        system = sys_msgs[0].content if sys_msgs else self.system
        if system:
            out += [_Piece("id", layout.token_id("<|system|>")), *content_pieces(system, layout, False), _Piece("id", end)]
        for m in messages:
            if m.role == "system":
                continue
            train = m.role == "assistant"
            out += [_Piece("id", layout.token_id(f"<|{m.role}|>"))]
            out += content_pieces(m.content, layout, train)
            out += [_Piece("id", end, train)]
        return out

    def generation_pieces(self, layout, force_modality):
        out = [_Piece("id", layout.token_id("<|assistant|>"))]
        if force_modality and force_modality != "text":
            out.append(_Piece("id", layout.start_id(force_modality)))
        return out

    def stop_token_ids(self, layout, tokenizer):
        return [layout.token_id("<|end|>")]


@dataclass
class AnyGPTPretrainTemplate(Template):
    """The reference's pretraining pair: ``[Human]: {u}<eoh> [MMGPT]: {a}<eos></s>``."""

    name: str = "anygpt-pretrain"
    profile: str = "anygpt"
    reference_strings = True
    force_start = False

    def pieces(self, messages, layout, loss_on):
        _check_roles(messages, self.name)
        body = [m for m in messages if m.role != "system"]
        if len(body) not in (1, 2):
            raise ValueError(f"template {self.name} renders one user/assistant pair, got {len(body)} turns")
        head = [
            _Piece("id", layout.token_id("[Human]")),
            _Piece("text", ":"),
            *content_pieces(_lead_space(body[0].content), layout, False),
            _Piece("id", layout.token_id("<eoh>")),
        ]
        if len(body) == 1:  # an inference prompt: the caller adds the generation prompt
            return head
        return [
            *head,
            *self.generation_pieces(layout, None),
            *content_pieces(_lead_space(body[1].content), layout, True),
            _Piece("id", layout.token_id("<eos>"), True),
        ]

    def suffix_ids(self, messages, tokenizer, loss_on, add_generation_prompt):
        complete = sum(m.role == "assistant" for m in messages) == 1
        if complete and not add_generation_prompt and tokenizer.eos_token_id is not None:
            return [tokenizer.eos_token_id]  # the reference appends </s> to every pair
        return []

    def generation_pieces(self, layout, force_modality):
        out = [_Piece("text", " "), _Piece("id", layout.token_id("[MMGPT]")), _Piece("text", ":")]
        if force_modality and force_modality != "text":
            out += [_Piece("text", " "), _Piece("id", layout.start_id(force_modality))]
        return out

    def stop_token_ids(self, layout, tokenizer):
        return [layout.token_id("<eos>")] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


@dataclass
class AnyGPTChatTemplate(Template):
    """The reference's chat format (``MMGPT`` conversation template of its release)."""

    name: str = "anygpt-chat"
    profile: str = "anygpt-chat"
    system: str | None = MMGPT_SYSTEM
    reference_strings = True
    force_start = False

    def pieces(self, messages, layout, loss_on):
        _check_roles(messages, self.name)
        sys_msgs = [m for m in messages if m.role == "system"]
        system = sys_msgs[0].content if sys_msgs else (self.system or "")
        out: list[_Piece] = [*content_pieces(system, layout, False), _Piece("text", "\n")]
        body = [m for m in messages if m.role != "system"]
        for i, m in enumerate(body):
            if m.role == "user":
                out += [_Piece("id", layout.token_id("[Human]")), _Piece("text", ":")]
                out += content_pieces(_lead_space(m.content), layout, False)
                out += [_Piece("id", layout.token_id("<eoh>")), _Piece("text", "\n")]
            else:
                out += [_Piece("id", layout.token_id("[MMGPT]")), _Piece("text", ":")]
                out += content_pieces(_lead_space(m.content), layout, True)
                out += [_Piece("id", layout.token_id("<eos>"), True)]
                if i != len(body) - 1:
                    out.append(_Piece("text", "\n"))
        return out

    def generation_pieces(self, layout, force_modality):
        out = [_Piece("id", layout.token_id("[MMGPT]")), _Piece("text", ":")]
        if force_modality and force_modality != "text":
            out += [_Piece("text", " "), _Piece("id", layout.start_id(force_modality))]
        return out

    def stop_token_ids(self, layout, tokenizer):
        return [layout.token_id("<eos>")] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])

    def compose_user(self, media, text):
        """The reference chat's ``interleaved`` task (``Prompter.generate_insturction_prompt``):
        images, then music, then speech, each followed by a space, then the text; with speech
        attached, its voice-command request ``"{prompt} Please recognize the voice command and
        give reply and voice"``; the whole stripped at both ends."""
        order = {"image": 0, "music": 1, "speech": 2}
        items: list[Union[str, MediaCodes]] = []
        for m in sorted(media, key=lambda c: order.get(c.modality, 3)):  # stable within a modality
            items += [m, " "]
        items.append(text)
        if any(m.modality == "speech" for m in media):
            items.append(" " + SPEECH_INSTRUCTION)
        items = [x for x in items if not (isinstance(x, str) and not x)]
        while items and isinstance(items[0], str) and not items[0].strip():
            items.pop(0)
        while items and isinstance(items[-1], str) and not items[-1].strip():
            items.pop()
        if items and isinstance(items[0], str):
            items[0] = items[0].lstrip()
        if items and isinstance(items[-1], str):
            items[-1] = items[-1].rstrip()
        return items


class _CachedLayout:
    """Read-only view of a :class:`VocabLayout` with its marker ids and ranges computed once (the
    layout recomputes them per call, which dominated rendering); anything else is the layout's."""

    def __init__(self, layout: VocabLayout):
        self.layout = layout
        self.markers = layout._marker_ids()
        self.ranges = {m.name: layout.code_range(m.name) for m in layout.modalities}
        self.delimiters = tuple(t for m in layout.modalities for t in (m.start, m.end))

    def token_id(self, token: str) -> int:
        got = self.markers.get(token)
        return got if got is not None else self.layout.token_id(token)  # the layout's error for unknown tokens

    def start_id(self, modality: str) -> int:
        return self.ranges[modality].stop if modality in self.ranges else self.layout.start_id(modality)

    def parse(self, text: str, strict: bool = True) -> list:
        if not any(d in text for d in self.delimiters):  # no span marker: the whole string is text
            return [("text", text)] if text else []
        return self.layout.parse(text, strict)

    def __getattr__(self, name: str):
        return getattr(self.layout, name)


@dataclass(frozen=True)
class _SpecialIds:
    """A tokenizer's bos/eos ids, read once (what templates ask of the tokenizer)."""

    bos_token_id: int | None
    eos_token_id: int | None


@dataclass
class RenderedBatch:
    """Many rendered sequences as flat arrays: sample ``i`` is ``input_ids[offsets[i]:offsets[i + 1]]``
    (``labels`` alike). What a build writes (Arrow list columns are values + offsets too), without
    a Python int per token."""

    input_ids: np.ndarray  # int32
    labels: np.ndarray  # int32, IGNORE_INDEX where no loss
    offsets: np.ndarray  # int64, len(self) + 1, offsets[0] == 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def rows(self) -> list[Rendered]:
        """Each sample as a :class:`Rendered` of Python lists."""
        ids, labels, o = self.input_ids.tolist(), self.labels.tolist(), self.offsets.tolist()
        return [Rendered(ids[a:b], labels[a:b]) for a, b in zip(o[:-1], o[1:])]

    def take(self, rows: np.ndarray, max_length: int | None = None) -> "RenderedBatch":
        """Samples ``rows`` (indices, in that order), each cut to ``max_length`` tokens if given."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[:-1][rows], self.lengths[rows]
        if max_length is not None:
            lengths = np.minimum(lengths, max_length)
        idx, offsets = _ranges(starts, lengths)
        return RenderedBatch(self.input_ids[idx], self.labels[idx], offsets)

    @staticmethod
    def concat(batches: Sequence["RenderedBatch"]) -> "RenderedBatch":
        """The samples of ``batches`` one after another."""
        if not batches:
            return RenderedBatch(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(1, np.int64))
        sizes = np.cumsum([0] + [len(b.input_ids) for b in batches[:-1]])
        offsets = np.concatenate([[0]] + [b.offsets[1:] + k for b, k in zip(batches, sizes)])
        return RenderedBatch(np.concatenate([b.input_ids for b in batches]),
                             np.concatenate([b.labels for b in batches]), offsets.astype(np.int64))

    @staticmethod
    def from_rows(rows: Sequence[Rendered]) -> "RenderedBatch":
        lengths = np.fromiter((len(r.input_ids) for r in rows), np.int64, len(rows))
        total = int(lengths.sum())
        ids = np.fromiter(itertools.chain.from_iterable(r.input_ids for r in rows), np.int32, total)
        labels = np.fromiter(itertools.chain.from_iterable(r.labels for r in rows), np.int32, total)
        return RenderedBatch(ids, labels, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ranges ``[starts[k], starts[k] + lengths[k])`` back to back, and the offsets
    of each range in that index array (one gather copies many slices at once)."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    idx = np.repeat(np.asarray(starts, np.int64) - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
    return idx, offsets


@dataclass
class CodesBatch:
    """Modality-local codes of many spans, flat: span ``i`` is ``values[offsets[i]:offsets[i + 1]]``
    (how an Arrow list column of codes holds them)."""

    modality: str
    values: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: np.ndarray) -> "CodesBatch":
        """Spans ``rows`` (indices, in that order)."""
        idx, offsets = _ranges(self.offsets[:-1][rows], np.diff(self.offsets)[rows])
        return CodesBatch(self.modality, self.values[idx], offsets)

    def span(self, i: int) -> MediaCodes:
        return MediaCodes(self.modality, self.values[self.offsets[i]:self.offsets[i + 1]].tolist())

    @staticmethod
    def from_lists(modality: str, spans: Sequence[Sequence[int]]) -> "CodesBatch":
        lengths = np.fromiter(map(len, spans), np.int64, len(spans))
        values = np.fromiter(itertools.chain.from_iterable(spans), np.int64, int(lengths.sum()))
        return CodesBatch(modality, values, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


# Slots of a conversation shape (BatchRenderer.render_shape): private-use characters no prompt text
# is expected to hold; a value that does is only ever inserted, never parsed for slots.
_SLOT_OPEN, _SLOT_CLOSE = "\ue000", "\ue001"
_SLOT_RE = re.compile(f"{_SLOT_OPEN}(\\w+){_SLOT_CLOSE}")
MEDIA_SLOT = "media"


def slot(name: str) -> str:
    """The placeholder for text slot ``name`` in a shape's messages (see :meth:`BatchRenderer.render_shape`)."""
    return f"{_SLOT_OPEN}{name}{_SLOT_CLOSE}"


class BatchRenderer:
    """Renders many conversations at once with the ids :meth:`Template.render` gives one by one.

    Text pieces repeated across samples (role markers, ``":"``, instructions) are tokenized once
    and cached (the cache is cleared when it reaches ``cache_size`` strings, so memory stays
    bounded); the rest of a batch goes through the tokenizer in one call; media codes become ids
    by array arithmetic, and the samples are assembled by one gather over flat arrays."""

    def __init__(self, template: Template, tokenizer, layout: VocabLayout, cache_size: int = 50_000):
        self.template, self.tokenizer, self.layout = template, tokenizer, _CachedLayout(layout)
        self.special_ids = _SpecialIds(tokenizer.bos_token_id, tokenizer.eos_token_id)  # HF looks these up per access
        self.cache: dict[str, np.ndarray] = {}
        self.cache_size = cache_size
        self.reference = template.reference_strings and encoder_for(tokenizer) is not None
        self._shapes: dict[tuple, list[tuple[str, object, bool]]] = {}

    def render(self, conversations: Sequence[Sequence[Message]], loss_on: str = "assistant",
               add_generation_prompt: bool = False, force_modality: str | None = None) -> list[Rendered]:
        """Ids and labels for each conversation (see :meth:`Template.render` for the arguments)."""
        if self.reference:  # the reference's whole-string ids: one conversation at a time
            return [self.template.render(m, self.tokenizer, self.layout.layout, loss_on, add_generation_prompt,
                                         force_modality) for m in conversations]
        return self.render_arrays(conversations, loss_on, add_generation_prompt, force_modality).rows()

    def render_arrays(self, conversations: Sequence[Sequence[Message]], loss_on: str = "assistant",
                      add_generation_prompt: bool = False, force_modality: str | None = None) -> RenderedBatch:
        """:meth:`render` as one :class:`RenderedBatch`."""
        if self.reference:
            return RenderedBatch.from_rows(self.render(conversations, loss_on, add_generation_prompt, force_modality))
        _check_loss_on(loss_on)
        t, tok, layout = self.template, self.special_ids, self.layout
        bos = [_Piece("id", tok.bos_token_id)] if t.add_bos and tok.bos_token_id is not None else []
        gen = t.generation_pieces(layout, force_modality) if add_generation_prompt else []
        asm = _Assembler(loss_on)
        texts: list[str] = []
        for messages in conversations:
            pieces = bos + t.pieces(list(messages), layout, loss_on) + gen
            for p in pieces:
                train = loss_on == "all" or (loss_on == "assistant" and p.train)
                if p.kind == "text":
                    asm.column("text", len(texts), train)
                    texts.append(str(p.value))
                elif p.kind == "id":
                    asm.const([int(p.value)], train)
                else:
                    asm.const(self._span(p.value), train)
            asm.const(t.suffix_ids(messages, tok, loss_on, add_generation_prompt), True, tail=True)
            asm.end_row()
        return asm.build(*self._token_table(texts))

    def render_shape(self, messages: Sequence[Message], texts: dict[str, Sequence[str]], media: CodesBatch | None,
                     loss_on: str = "assistant") -> RenderedBatch:
        """Many conversations of one shape: ``messages`` written with :func:`slot` placeholders in
        their text and ``MediaCodes(modality, ())`` where the media go; sample ``i`` fills slot
        ``name`` with ``texts[name][i]`` and the media with ``media``'s span ``i``. The same ids as
        :meth:`render` on the filled-in messages (a sample whose text holds span markers, which
        rendering would parse, is rendered that way), without walking the template per sample."""
        n = len(media) if media is not None else len(next(iter(texts.values())))
        if self.reference:
            return self.render_arrays([self._fill(messages, texts, media, i) for i in range(n)], loss_on)
        _check_loss_on(loss_on)
        delimiters = self.layout.delimiters
        parsed = []
        for v in texts.values():  # one scan of the joined values; per sample only when a marker is there
            if any(d in "\n".join(v) for d in delimiters):
                parsed += [i for i in range(n) if any(d in v[i] for d in delimiters)]
        parsed = sorted(set(parsed))
        if parsed:  # rare: such a sample renders through the pieces of its own messages
            fast = np.setdiff1d(np.arange(n), parsed)
            keep = {k: [v[i] for i in fast] for k, v in texts.items()}
            sub = None if media is None else media.take(fast)
            a = self.render_shape(messages, keep, sub, loss_on)
            b = self.render_arrays([self._fill(messages, texts, media, i) for i in parsed], loss_on)
            return RenderedBatch.concat([a, b]).take(np.argsort(np.concatenate([fast, parsed]), kind="stable"))
        columns = self._shape(messages, loss_on)
        asm = _Assembler(loss_on)
        strings: list[str] = []
        media_ids = None
        for kind, value, train in columns:
            if kind == "const":
                asm.const(value, train)
            elif kind == "text":  # value: literal parts and slot names, alternating
                parts = value
                filled = [parts[0]] * n
                for j in range(1, len(parts), 2):
                    vals, lit = texts[parts[j]], parts[j + 1]
                    filled = [f + v + lit for f, v in zip(filled, vals)]
                asm.column("text", np.arange(len(strings), len(strings) + n), train)
                strings += filled
            else:
                media_ids = self._codes_to_ids(media)
                asm.column("media", None, train)
        return asm.build_shape(n, *self._token_table(strings), media_ids, media.offsets if media is not None else None)

    def _shape(self, messages: Sequence[Message], loss_on: str) -> list[tuple[str, object, bool]]:
        """The columns of a shape: constant ids, text with slots, the media span's codes."""
        key = (tuple((m.role, m.content if isinstance(m.content, (str, MediaCodes)) else tuple(m.content))
                     for m in messages), loss_on)
        if key in self._shapes:
            return self._shapes[key]
        t, tok, layout = self.template, self.special_ids, self.layout
        bos = [_Piece("id", tok.bos_token_id)] if t.add_bos and tok.bos_token_id is not None else []
        columns: list[tuple[str, object, bool]] = []

        def const(ids: list[int], train: bool) -> None:
            if columns and columns[-1][0] == "const" and columns[-1][2] == train:
                columns[-1] = ("const", columns[-1][1] + ids, train)
            elif ids:
                columns.append(("const", list(ids), train))

        for p in bos + t.pieces(list(messages), layout, loss_on):
            train = loss_on == "all" or (loss_on == "assistant" and p.train)
            if p.kind == "id":
                const([int(p.value)], train)
            elif p.kind == "media":
                if p.value.codes or any(c[0] == "media" for c in columns):
                    raise ValueError("a shape holds one media span, MediaCodes(modality, ()): its codes come per sample")
                r = self.layout.ranges[p.value.modality]
                const([r.stop], train)
                columns.append(("media", p.value.modality, train))
                const([r.stop + 1], train)
            elif _SLOT_OPEN in str(p.value):
                columns.append(("text", _SLOT_RE.split(str(p.value)), train))
            else:
                const(self._text_ids([str(p.value)])[0].tolist(), train)
        const(t.suffix_ids(messages, tok, loss_on, False), loss_on != "none")
        self._shapes[key] = columns
        return columns

    def _fill(self, messages: Sequence[Message], texts: dict[str, Sequence[str]], media: CodesBatch | None,
              i: int) -> list[Message]:
        def item(x):
            if isinstance(x, MediaCodes):
                return media.span(i) if media is not None else x
            return _SLOT_RE.sub(lambda m: texts[m.group(1)][i], x)

        return [Message(m.role, item(m.content) if isinstance(m.content, (str, MediaCodes))
                        else [item(x) for x in m.content]) for m in messages]

    def _codes_to_ids(self, media: CodesBatch) -> np.ndarray:
        r = self.layout.ranges.get(media.modality)
        v = media.values
        if r is None or (len(v) and (int(v.min()) < 0 or int(v.max()) >= len(r))):
            for i in range(len(media)):  # the layout's error, naming the bad code
                self.layout.layout.span_ids(media.modality, media.span(i).codes)
        return v.astype(np.int32) + np.int32(r.start)

    def _text_ids(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids of each text, from the cache or tokenized in one call (then cached)."""
        cache = self.cache
        missing = list(dict.fromkeys(s for s in texts if s not in cache))
        if not missing:
            return [cache[s] for s in texts]
        # int32 arrays: a few hundred bytes per cached text, where lists of ints took several KB
        fresh = {k: np.asarray(v, np.int32) for k, v in zip(missing, self._tokenize(missing))}
        out = [fresh[s] if s in fresh else cache[s] for s in texts]
        if len(cache) + len(fresh) > self.cache_size:
            cache.clear()
        if len(fresh) <= self.cache_size:
            cache.update(fresh)
        return out

    def _token_table(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The token ids of ``texts`` back to back (int32) and each text's offsets in them."""
        ids = self._text_ids(texts)
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return (np.concatenate(ids) if ids else np.zeros(0, np.int32)), offsets

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """``tokenizer(text, add_special_tokens=False)["input_ids"]`` for each text. A Hugging Face
        fast tokenizer's own call spends most of its time building per-text Python encodings; its
        Rust backend gives the same ids for the whole list in one call. The first text goes through
        the full call, which sets the backend's options (no truncation or padding, special-token
        handling) as the full call would for every text."""
        tok = self.tokenizer
        first = tok(texts[:1], add_special_tokens=False)["input_ids"]
        backend = tok._tokenizer if tok.is_fast else None
        if len(texts) == 1 or backend is None:
            return first + (tok(texts[1:], add_special_tokens=False)["input_ids"] if len(texts) > 1 else [])
        return first + [e.ids for e in backend.encode_batch_fast(texts[1:], add_special_tokens=False)]

    def _span(self, media: MediaCodes) -> list[int]:
        """``[<so..>] + code ids + [<eo..>]``, as :meth:`VocabLayout.span_ids` (same errors)."""
        r = self.layout.ranges.get(media.modality)
        codes = media.codes
        if r is None or (codes and (min(codes) < 0 or max(codes) >= len(r))):
            return self.layout.layout.span_ids(media.modality, codes)  # raises naming the bad code
        return [r.stop, *map(r.start.__add__, codes), r.stop + 1]


def _check_loss_on(loss_on: str) -> None:
    if loss_on not in ("assistant", "all", "none"):
        raise ValueError(f"loss_on must be assistant, all or none, not {loss_on!r}")


class _Assembler:
    """Samples as rows of columns (constant ids, a text's tokens, a media span), copied into flat
    arrays by one gather: per sample only indices are noted, never token lists joined."""

    def __init__(self, loss_on: str):
        self.loss_on = loss_on
        self.consts: list[int] = []
        # per column: (kind, start in consts or text index, length or None, train)
        self.cols: list[tuple[str, object, int, bool]] = []
        self.row_ends: list[int] = []

    def const(self, ids: Sequence[int], train: bool, tail: bool = False) -> None:
        if not ids:
            return
        train = (self.loss_on != "none") if tail else train
        self.cols.append(("const", len(self.consts), len(ids), train))
        self.consts += ids

    def column(self, kind: str, index, train: bool) -> None:
        self.cols.append((kind, index, 0, train))

    def end_row(self) -> None:
        self.row_ends.append(len(self.cols))

    def build(self, text_ids: np.ndarray, text_offsets: np.ndarray) -> RenderedBatch:
        """Rows noted with :meth:`end_row` (text columns index ``text_offsets``)."""
        consts = np.asarray(self.consts, np.int32)
        k = len(self.cols)
        starts = np.empty(k, np.int64)
        lengths = np.empty(k, np.int64)
        train = np.empty(k, bool)
        for j, (kind, index, n, tr) in enumerate(self.cols):
            if kind == "const":
                starts[j], lengths[j] = index, n
            else:
                starts[j] = len(consts) + text_offsets[index]
                lengths[j] = text_offsets[index + 1] - text_offsets[index]
            train[j] = tr
        source = np.concatenate([consts, text_ids])
        ends = np.asarray(self.row_ends, np.int64)
        return _gather(source, starts, lengths, train, ends)

    def build_shape(self, n: int, text_ids: np.ndarray, text_offsets: np.ndarray, media_ids: np.ndarray | None,
                    media_offsets: np.ndarray | None) -> RenderedBatch:
        """``n`` rows of the noted columns (text columns: an index per row into ``text_offsets``)."""
        consts = np.asarray(self.consts, np.int32)
        k = len(self.cols)
        starts = np.empty((n, k), np.int64)
        lengths = np.empty((n, k), np.int64)
        base_media = len(consts) + len(text_ids)
        for j, (kind, index, m, _) in enumerate(self.cols):
            if kind == "const":
                starts[:, j], lengths[:, j] = index, m
            elif kind == "text":
                starts[:, j] = len(consts) + text_offsets[index]
                lengths[:, j] = text_offsets[index + 1] - text_offsets[index]
            else:
                starts[:, j] = base_media + media_offsets[:-1]
                lengths[:, j] = np.diff(media_offsets)
        train = np.tile(np.array([c[3] for c in self.cols], bool), n)
        parts = [consts, text_ids] + ([media_ids] if media_ids is not None else [])
        return _gather(np.concatenate(parts), starts.ravel(), lengths.ravel(), train,
                       np.arange(1, n + 1, dtype=np.int64) * k)


def _gather(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray, train: np.ndarray,
            row_ends: np.ndarray) -> RenderedBatch:
    """Columns ``[starts[j], starts[j] + lengths[j])`` of ``source`` back to back; row ``i`` is
    columns ``row_ends[i - 1]:row_ends[i]``; labels are the ids where ``train``, else IGNORE_INDEX."""
    idx, col_offsets = _ranges(starts, lengths)
    ids = source[idx].astype(np.int32, copy=False)
    labels = np.where(np.repeat(train, lengths), ids, np.int32(IGNORE_INDEX)).astype(np.int32, copy=False)
    offsets = np.concatenate([[0], col_offsets[row_ends]]).astype(np.int64)
    return RenderedBatch(ids, labels, offsets)


def _lead_space(content: Content) -> list:
    """Reference formats write ``role + ": " + message``; the space belongs to the content piece
    (the message is kept as it is: the reference's string had exactly these characters)."""
    items = [content] if isinstance(content, (str, MediaCodes)) else list(content)
    if items and isinstance(items[0], str):
        return [" " + items[0], *items[1:]]
    return [" ", *items]


TEMPLATES: dict[str, type[Template]] = {
    "chat": ChatTemplate,
    "anygpt-pretrain": AnyGPTPretrainTemplate,
    "anygpt-chat": AnyGPTChatTemplate,
}


def get_template(name: str, **overrides) -> Template:
    """``get_template("chat")`` or ``get_template("chat@1")``; unknown names list the known ones."""
    base, _, ver = name.partition("@")
    if base not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    t = TEMPLATES[base](**overrides)
    if ver and int(ver) != t.version:
        raise ValueError(f"template {base} has version {t.version}, not {ver}")
    return t


def template_from_dict(d: dict) -> Template:
    return get_template(f"{d['name']}@{d.get('version', 1)}", system=d.get("system"))


def voice_response(transcript: str, reply: str, speech: MediaCodes) -> list:
    """The reference's voice-chat target: ``<-Ins-> {transcript}\\n <-Res-> {reply} <sosp>…<eosp>``
    (markers from the layout's extra tokens; use with ``anygpt-chat`` or ``chat``)."""
    return [f"<-Ins-> {transcript}\n <-Res-> {reply} ", speech]
