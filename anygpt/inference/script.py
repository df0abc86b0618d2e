"""Non-interactive chat: a JSONL script of turns in, a JSONL transcript out; and the reference's
single-shot ``in|out|data[|voice_prompt]`` form for base models.

Script line (one user turn; history is kept across lines)::

    {"text": "...", "attachments": [{"modality": "image", "path": "cat.png"}], "output": "image"}

``attachments`` and ``output`` are optional; relative attachment paths resolve against the script
file's folder. An audio attachment may give a window, ``"start"`` (seconds or ``"random"``) and
``"length"`` (seconds): only that part of the recording is tokenized (see
:class:`~anygpt.inference.chat.Attachment` for the defaults). Transcript line, one per turn::

    {"turn": 1, "text": "reply text without media spans", "media": [{"modality": "image", "path": "..."}],
     "raw": "the reply with spans"}

A turn whose attachment cannot be read gets ``"error"`` (and empty text/media) and the run goes
on; the transcript is rewritten atomically after every turn.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anygpt.data.instructions import Pools, draw_instruction
from anygpt.data.templates import MediaCodes
from anygpt.inference.chat import Attachment, ChatSession, Reply
from anygpt.inference.generation import MEDIA
from anygpt.inference.settings import OUTPUTS
from anygpt.modality.base import MediaError
from anygpt.utils import read_jsonl, write_jsonl


@dataclass
class ScriptTurn:
    text: str
    attachments: list[Attachment]
    output: str | None


def read_script(path: str | os.PathLike) -> list[ScriptTurn]:
    """Parse and validate a whole script first, so a typo on line 9 fails before any generation."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: chat script not found")
    turns = []
    for n, obj in read_jsonl(path):
        where = f"{path}:{n}"
        unknown = set(obj) - {"text", "attachments", "output"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; expected text, attachments, output")
        text = obj.get("text", "")
        if not isinstance(text, str):
            raise ValueError(f"{where}: 'text' must be a string")
        output = obj.get("output")
        if output is not None and output not in OUTPUTS:
            raise ValueError(f"{where}: 'output' must be one of {', '.join(OUTPUTS)} or null, not {output!r}")
        atts = obj.get("attachments") or []
        if not isinstance(atts, list):
            raise ValueError(f"{where}: 'attachments' must be a list")
        parsed = []
        for a in atts:
            if not isinstance(a, dict) or a.get("modality") not in MEDIA or not isinstance(a.get("path"), str):
                raise ValueError(f"{where}: each attachment needs 'modality' (image, speech or music) and 'path'")
            p = Path(a["path"])
            extra = set(a) - {"modality", "path", "start", "length"}
            if extra:
                raise ValueError(f"{where}: unknown attachment field(s) {sorted(extra)}; expected modality, path, start, length")
            start, length = a.get("start"), a.get("length")
            if not (start is None or start == "random" or (isinstance(start, (int, float)) and start >= 0)):
                raise ValueError(f"{where}: attachment 'start' must be seconds >= 0 or \"random\", not {start!r}")
            if not (length is None or (isinstance(length, (int, float)) and length > 0)):
                raise ValueError(f"{where}: attachment 'length' must be seconds > 0, not {length!r}")
            parsed.append(Attachment(a["modality"], str(p if p.is_absolute() else path.parent / p), start, length))
        if not text and not parsed:
            raise ValueError(f"{where}: a turn needs text or an attachment")
        turns.append(ScriptTurn(text, parsed, output))
    if not turns:
        raise ValueError(f"{path}: no turns")
    return turns


def run_script(session: ChatSession, script: str | os.PathLike | list[ScriptTurn],
               transcript: str | os.PathLike) -> list[dict[str, Any]]:
    """Run every turn of ``script`` (a path, or turns from :func:`read_script`) in ``session``;
    write and return the transcript records."""
    turns = script if isinstance(script, list) else read_script(script)
    records: list[dict[str, Any]] = []
    for i, t in enumerate(turns, 1):
        try:
            reply = session.send(t.text, t.attachments, t.output)
            rec = {"turn": i, **reply.to_dict()}
        except (MediaError, FileNotFoundError, ValueError) as e:
            rec = {"turn": i, "text": "", "media": [], "raw": "", "error": str(e)}
        records.append(rec)
        write_jsonl(transcript, records)
    return records


def run_single(session: ChatSession, spec: str, seed: int = 0, pools: Pools | None = None) -> Reply:
    """The reference base model's single-shot form ``in|out|data[|voice_prompt]``.

    ``in``/``out`` are modalities (``text``, ``image``, ``speech``, ``music``); ``data`` is the
    text, or a media file path when ``in`` is a media modality. As in the reference, media→text
    prompts are ``{instruction} {media}`` and text→media prompts are
    ``{instruction} This is input: {text}``, the instruction drawn from the phrasing pools;
    ``voice_prompt`` (text→speech only) is an audio file handed to the speech decoder; ``pools``
    replaces our instruction pools (e.g. the reference's, from ``load_instruction_pools``)."""
    parts = spec.split("|")
    if len(parts) not in (3, 4):
        raise ValueError(f"--single expects 'in|out|data[|voice_prompt]', got {len(parts)} field(s)")
    src, dst, data = parts[0].strip(), parts[1].strip(), parts[2]
    voice = parts[3].strip() if len(parts) == 4 and parts[3].strip() else None
    for name, m in (("in", src), ("out", dst)):
        if m not in OUTPUTS:
            raise ValueError(f"--single: '{name}' must be one of {', '.join(OUTPUTS)}, not {m!r}")
    if voice and (src, dst) != ("text", "speech"):
        raise ValueError("--single: a voice prompt is only used for text|speech")
    if voice and not Path(voice).is_file():
        raise FileNotFoundError(f"{voice}: voice prompt not found")
    rng = random.Random(seed)
    content: list[str | MediaCodes]
    if src == "text" and dst == "text":
        content = [data]
    elif src == "text":
        content = [f"{draw_instruction(dst, 't2x', rng, pools)} This is input: {data.strip()}"]
    elif dst == "text":
        codes = session.encode_attachment(Attachment(src, data.strip()))
        content = [f"{draw_instruction(src, 'x2t', rng, pools)} ", codes]
    else:
        raise ValueError(f"--single: {src}→{dst} is not a base-model task; one side must be text")
    return session.send_content(content, dst, voice_prompt=voice)
