"""Instruction conversations in the reference's AnyInstruct schema, with media referenced by path.

A line of a conversations JSONL file::

    {"id": "conv-000001", "conversation": [[
        {"role": "user", "message": "Describe this picture. <image:image/train/image-train-000003.png>"},
        {"role": "assistant", "message": "a small red circle on a white background"}]]}

``conversation`` is a list of conversations (the reference's shape), each a list of turns that
alternate user / assistant, user first. Inside a message, media appear either

- by path: ``<image:PATH>``, ``<speech:PATH>``, ``<music:PATH>`` — PATH relative to the JSONL
  file's folder (or absolute), no ``<``, ``>`` or newline in it; the builder tokenizes the file
  with the modality's tokenizer card (or finds its codes in code shards by path), or
- inline as the reference's token strings: ``<soim><👀12>…<eoim>``, ``<sosp>…<eosp>``,
  ``<somu>…<eomu>`` (parsed by the template through :meth:`VocabLayout.parse`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


MEDIA_REF = re.compile(r"<(image|speech|music):([^<>\n]+)>")


@dataclass(frozen=True)
class MediaRef:
    """A media file referenced from a message."""

    modality: str
    path: str


def media_ref(modality: str, path: str | Path) -> str:
    """The inline marker for a file: ``<image:some/file.png>``."""
    p = str(path)
    if any(c in p for c in "<>\n"):
        raise ValueError(f"media path {p!r} cannot be referenced inline (contains <, > or a newline)")
    return f"<{modality}:{p}>"


def split_media_refs(message: str) -> list[str | MediaRef]:
    """Split a message into text (which may still carry inline token strings) and :class:`MediaRef`."""
    out: list[str | MediaRef] = []
    pos = 0
    for m in MEDIA_REF.finditer(message):
        if m.start() > pos:
            out.append(message[pos : m.start()])
        out.append(MediaRef(m.group(1), m.group(2).strip()))
        pos = m.end()
    if pos < len(message):
        out.append(message[pos:])
    return out


def check_conversation(obj: dict) -> list[list[dict]]:
    """Validate one AnyInstruct line; return its conversations. Raises ValueError with the reason."""
    if "conversation" not in obj:
        raise ValueError("missing key 'conversation'")
    convs = obj["conversation"]
    if not isinstance(convs, list) or not convs:
        raise ValueError("'conversation' must be a non-empty list of conversations")
    if all(isinstance(t, dict) for t in convs):  # tolerate a flat list of turns
        convs = [convs]
    for conv in convs:
        if not isinstance(conv, list) or not conv:
            raise ValueError("each conversation must be a non-empty list of turns")
        for i, turn in enumerate(conv):
            if not isinstance(turn, dict) or "role" not in turn or "message" not in turn:
                raise ValueError(f"turn {i} must be an object with 'role' and 'message'")
            want = "user" if i % 2 == 0 else "assistant"
            if turn["role"] != want:
                raise ValueError(f"turn {i} has role {turn['role']!r}, expected {want!r} (user first, alternating)")
            if not isinstance(turn["message"], str):
                raise ValueError(f"turn {i}: message must be a string")
        if conv[-1]["role"] != "assistant":
            raise ValueError("a conversation must end with an assistant turn")
    return convs


def referenced_media(convs: Sequence[Sequence[dict]]) -> list[MediaRef]:
    """Every file referenced by path in the conversations, in order."""
    return [p for conv in convs for turn in conv for p in split_media_refs(turn["message"]) if isinstance(p, MediaRef)]
