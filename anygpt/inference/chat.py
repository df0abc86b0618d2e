"""A multi-turn chat session over a model bundle: attachments in, text and media files out.

History is kept as :class:`~anygpt.data.templates.Message` objects whose media are codes, so
the next turn's prompt carries earlier images/audio exactly as the model produced or saw them.
Every prompt is rendered with the bundle's own template. Output files get names built only from
the turn number, the modality and an index (``turn003_image_0.png``), never from the prompt
text, and are written atomically into the session's ``out_dir``.

Example::

    session = ChatSession(load_bundle("out/model"), preset="demo", out_dir="chat_out")
    reply = session.send("Draw a red circle.", output="image")
    reply.media        # [{"modality": "image", "path": "chat_out/turn001_image_0.png"}]
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from anygpt.data.templates import MediaCodes, Message
from anygpt.inference.generation import MEDIA, TextCallbackStreamer, generate_batch, render_prompt
from anygpt.inference.settings import OUTPUTS, InputWindow, default_preset, input_window, resolve_settings, resolve_window

log = logging.getLogger(__name__)

MEDIA_SUFFIX = {"image": ".png", "speech": ".wav", "music": ".wav"}
# No tokenizer packs more characters than this into a token on ordinary text: a message longer
# than context × this cannot fit and is refused before it is tokenized (a 10 MB message would
# otherwise cost gigabytes in the tokenizer and the model).
MAX_CHARS_PER_TOKEN = 16


@dataclass
class Attachment:
    """A media file the user attaches to the next message; for audio, optionally only ``length``
    seconds from ``start`` (seconds, or ``"random"``). Without them the preset's window applies
    (the ``reference`` preset: music 5 s for anygpt-chat, 20 s for the base model)."""

    modality: str
    path: str
    start: float | str | None = None
    length: float | None = None


@dataclass
class Reply:
    """One assistant turn: ``text`` without media spans, ``media`` files written, and ``raw``
    (the reply with media as the reference's token strings, e.g. ``<soim><👀3>…<eoim>``)."""

    text: str
    media: list[dict[str, str]] = field(default_factory=list)
    raw: str = ""
    notes: list[str] = field(default_factory=list)
    prompt: list[int] = field(default_factory=list)  # the ids the model was given (not in the transcript)
    output: str | None = None  # the modality the reply was generated as (None: free text and media)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "media": self.media, "raw": self.raw}


class ChatSession:
    """Renders history with the bundle's template, generates, splits and decodes the reply."""

    def __init__(
        self,
        bundle: Any,
        preset: str | None = None,
        out_dir: str | os.PathLike = "chat_out",
        overrides: dict[str, Any] | None = None,
        system: str | None = None,
        seed: int | None = None,
        force_start: bool | None = None,
    ):
        """``preset`` None: ``reference`` for a model on a reference template, else ``demo``.
        ``force_start`` None: the template's default (see :func:`render_prompt`)."""
        self.bundle = bundle
        self.preset = preset or default_preset(bundle.template)
        self.overrides = overrides or {}
        self.force_start = force_start
        self.base_model = bundle.template.name == "anygpt-pretrain"
        resolve_settings(self.preset, None, bundle.generation, self.overrides)  # fail early on bad names
        self.out_dir = Path(out_dir)
        self.system = system
        self.seed = seed
        self.history: list[Message] = []
        self.turn = 0

    def reset(self) -> None:
        """Forget the conversation (files already written stay)."""
        self.history = []

    # ------------------------------------------------------------------ input
    def encode_attachment(self, attachment: Attachment) -> MediaCodes:
        """Tokenize one media file with the bundle's tokenizer for its modality."""
        m = attachment.modality
        if m not in MEDIA:
            raise ValueError(f"unknown attachment modality {m!r}; expected image, speech or music")
        tok = self.bundle.tokenizers.get(m)
        if tok is None:
            have = ", ".join(sorted(self.bundle.tokenizers)) or "none"
            raise ValueError(f"this model has no {m} tokenizer (it has: {have}); cannot attach {attachment.path}")
        path = Path(attachment.path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: attachment not found")
        if m == "image":
            if attachment.start is not None or attachment.length is not None:
                raise ValueError(f"{path}: a window (start, length) applies to audio, not images")
            item = tok.load_media(path)
        else:
            item = self._load_audio(tok, attachment, path)
        codes = tok.encode([item])[0]
        return MediaCodes(m, [int(c) for c in codes])

    def _load_audio(self, tok: Any, attachment: Attachment, path: Path) -> Any:
        """The attachment's window of the recording (see :class:`Attachment`); a long file with
        no window is cut to the tokenizer's default window, with a warning."""
        import random

        from anygpt.modality.media import audio_duration

        if attachment.start is not None or attachment.length is not None:
            window: InputWindow | None = InputWindow(attachment.start if attachment.start is not None else 0.0,
                                                     attachment.length)
        else:
            window = input_window(self.preset, self.bundle.template.name, attachment.modality)
        rng = random.Random(f"{self.seed}:{self.turn}:{path}")
        start, length, note = resolve_window(path, attachment.modality, audio_duration(path), window,
                                             tok.default_window_seconds, tok.max_seconds, rng)
        if note:
            log.warning(note)
        if start == 0.0 and length is None:
            return tok.load_media(path)
        return tok.load_window(path, start, length)

    # ------------------------------------------------------------------ turn
    def send(
        self,
        text: str = "",
        attachments: Sequence[Attachment] = (),
        output: str | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Reply:
        """Run one turn. ``output`` forces the reply's modality (``text``/``image``/``speech``/``music``).

        Typed text may not contain the template's role markers (``<|user|>``, ``[MMGPT]``…): they
        are single tokens, and a message must not be able to forge a turn."""
        context = self.context_length
        if context is not None and len(text) > context * MAX_CHARS_PER_TOKEN:
            raise ValueError(f"the message is {len(text)} characters; this model reads {context} tokens "
                             f"(at most about {context * MAX_CHARS_PER_TOKEN} characters): shorten it")
        for marker in self.bundle.layout.specials:
            if marker in text:
                raise ValueError(f"the message contains the reserved marker {marker}; remove it")
        # the template composes media and text (the reference's chat: media first, joined with spaces,
        # and its voice-command request when speech is attached)
        content = self.bundle.template.compose_user([self.encode_attachment(a) for a in attachments], text)
        return self.send_content(content, output, on_text)

    def send_content(
        self,
        content: Sequence[str | MediaCodes],
        output: str | None = None,
        on_text: Callable[[str], None] | None = None,
        voice_prompt: str | None = None,
    ) -> Reply:
        """Run one turn whose user message is ``content`` (text and media codes, in order).
        ``voice_prompt``: an audio file passed to a speech decoder that takes one."""
        if output is not None and output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r}; expected one of {', '.join(OUTPUTS)}")
        if not content:
            raise ValueError("empty message: give text or an attachment")
        user = Message("user", list(content))
        # a single-pair template (a base model's pretraining prompt) sees only the current turn
        history = [] if self.bundle.template.name == "anygpt-pretrain" else self.history
        forces = self.bundle.template.force_start if self.force_start is None else self.force_start
        if output is None and forces:
            output = self._chosen_output(history, user)
        settings = resolve_settings(self.preset, output, self.bundle.generation, self.overrides, self.base_model)
        prompt, dropped = self._render_within_context(history, user, output, settings.max_new_tokens)
        streamer = TextCallbackStreamer(self.bundle, on_text) if on_text and settings.num_beams == 1 else None
        seed = None if self.seed is None else self.seed + self.turn  # reproducible, but not the same draw every turn
        request = " ".join(c for c in content if isinstance(c, str)).strip()
        if settings.best_of > 1 and not (output in MEDIA and request):
            settings = replace(settings, best_of=1)  # read-back ranks media made from a text request
        [ids] = generate_batch(self.bundle, [prompt], output, settings, streamer=streamer, seed=seed, requests=[request])
        self.turn += 1
        reply = self._render_reply(ids, voice_prompt)
        reply.prompt, reply.output = list(prompt), output
        if dropped:
            reply.notes.append(f"the {dropped} oldest message(s) were left out of the prompt to fit the model's context")
        self.history += [user, Message("assistant", self._assistant_content(ids))]
        return reply

    def _chosen_output(self, history: list[Message], user: Message) -> str | None:
        """The modality a free reply is generated as: a media modality when the model's most
        likely first token (under the reply constraints) opens that modality's span, else None.

        A free reply runs under the text settings, whose length budget (``max_new_tokens``) may be
        too short for a picture or speech: the constraints would never let a span open that cannot
        close, so "Draw a red circle." could only get text. Deciding the modality from the first
        token lets the reply be generated with that modality's own settings (length, sampling,
        ``best_of``) exactly as with ``output=`` set; the trained replies open a media span first."""
        import torch

        from anygpt.inference.generation import make_processor

        text = resolve_settings(self.preset, None, self.bundle.generation, self.overrides, self.base_model)
        prompt, _ = self._render_within_context(history, user, None, text.max_new_tokens)
        layout = self.bundle.layout
        starts = {layout.start_id(m): m for m in layout.modality_names if m in self.bundle.tokenizers}
        if not starts:
            return None
        model = self.bundle.model
        ids = torch.tensor([prompt], dtype=torch.long, device=next(model.parameters()).device)
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[:, -1].float()
        scores = make_processor(self.bundle, None)(ids, logits)
        return starts.get(int(scores.argmax(-1)))

    @property
    def context_length(self) -> int | None:
        """The model's position limit (``max_position_embeddings``); None when it declares none."""
        n = getattr(self.bundle.model.config, "max_position_embeddings", None)  # not every config has one
        return int(n) if n else None

    def _render_within_context(self, history: list[Message], user: Message, output: str | None,
                               max_new_tokens: int) -> tuple[list[int], int]:
        """The prompt ids, leaving ``min(max_new_tokens, context/2)`` positions for the reply: the
        oldest turns are left out until it fits (returns how many messages were); a message that
        does not fit on its own raises ``ValueError`` with its length."""
        context = self.context_length
        room = min(max_new_tokens, context // 2) if context else 0
        system = [Message("system", self.system)] if self.system else []
        dropped = 0
        while True:
            prompt = render_prompt(self.bundle, system + history[dropped:] + [user], output, self.force_start)
            if context is None or len(prompt) + room <= context:
                return prompt, dropped
            if dropped >= len(history):
                raise ValueError(f"the message is {len(prompt)} tokens; this model reads {context} tokens and keeps "
                                 f"{room} for the reply, so a message may be at most {context - room}: shorten it")
            dropped += 2 if dropped + 1 < len(history) else 1  # a user turn with its reply

    def _assistant_content(self, ids: list[int]) -> list[str | MediaCodes]:
        out: list[str | MediaCodes] = []
        for kind, val in self.bundle.layout.split_ids(ids):
            if kind == "text":
                t = self._decode_text(val)
                if t:
                    out.append(t)
            elif val:
                out.append(MediaCodes(kind, val))
        # the reference keeps the reply stripped at both ends in its history
        if out and isinstance(out[0], str):
            out[0] = out[0].lstrip()
        if out and isinstance(out[-1], str):
            out[-1] = out[-1].rstrip()
        return [c for c in out if not (isinstance(c, str) and not c)] or [""]

    def _decode_text(self, ids: list[int]) -> str:
        text_ids = [i for i in ids if i < self.bundle.layout.base_vocab_size]
        return self.bundle.tokenizer.decode(text_ids, skip_special_tokens=True)

    def _render_reply(self, ids: list[int], voice_prompt: str | None = None) -> Reply:
        layout = self.bundle.layout
        texts, raw, media, notes = [], [], [], []
        index = {m: 0 for m in MEDIA}
        for kind, val in layout.split_ids(ids):
            if kind == "text":
                t = self._decode_text(val)
                texts.append(t)
                raw.append(t)
                continue
            raw.append(layout.codes_to_string(kind, val))
            if not val:
                notes.append(f"the model opened a {kind} span but produced no codes")
                continue
            tok = self.bundle.tokenizers.get(kind)
            if tok is None:
                raise UndecodableReply(undecodable_message(self.bundle, kind, len(val)))
            path = self._output_path(kind, index[kind])
            index[kind] += 1
            try:
                save_decoded(tok, val, path, voice_prompt if kind == "speech" else None)
            except Exception as e:  # whatever a span holds, the session goes on: said, not a traceback
                notes.append(f"{len(val)} {kind} codes could not be decoded: {type(e).__name__}: {e}")
                continue
            media.append({"modality": kind, "path": str(path)})
        for n in notes:
            log.warning(n)
        return Reply(" ".join(t.strip() for t in texts if t.strip()), media, "".join(raw), notes)

    def _output_path(self, modality: str, index: int) -> Path:
        """``turn003_image_0.png`` in ``out_dir``; a suffix ``-2``… keeps names unique when
        the folder already holds a file of that name (a second session in the same folder)."""
        stem = f"turn{self.turn:03d}_{modality}_{index}"
        suffix = MEDIA_SUFFIX[modality]
        path = self.out_dir / f"{stem}{suffix}"
        k = 2
        while path.exists():
            path = self.out_dir / f"{stem}-{k}{suffix}"
            k += 1
        return path


class UndecodableReply(ValueError):
    """The model replied with media the bundle has no tokenizer for."""


def undecodable_message(bundle: Any, modality: str, n_codes: int) -> str:
    """One line naming the missing card and the fix."""
    where = bundle.path or "the model directory"
    return (f"{where}: the reply holds {n_codes} {modality} codes but the model has no {modality} tokenizer "
            f"({where}/tokenizers/{modality}/card.yaml is missing); re-export with "
            f"export.cards='{{\"{modality}\": \"CARD\"}}' or copy the card folder there")


def save_decoded(tokenizer: Any, codes: Sequence[int], path: Path, voice_prompt: str | None = None) -> Path:
    """Decode ``codes`` with ``tokenizer`` and write the media to ``path`` atomically (a temp
    file with the same suffix in the same folder, then a rename)."""
    kwargs = {}
    if voice_prompt is not None:
        if tokenizer.takes_voice_prompt:
            kwargs["voice_prompt"] = voice_prompt
        else:
            log.warning(f"the {tokenizer.modality} tokenizer takes no voice prompt; {voice_prompt} ignored")
    item = tokenizer.decode(list(codes), **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        tokenizer.save_media(item, tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path
