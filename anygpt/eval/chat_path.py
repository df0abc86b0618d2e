"""Evaluation through the user's path: the same :class:`~anygpt.inference.chat.ChatSession`,
template and default preset that ``anygpt chat`` uses, one fresh session per item.

The item is given as a user gives it: its media FILE attached to a chat turn with a natural
question ("What is in this picture?", "Transcribe this.") or a request typed as text ("Draw a
large red circle."). The output modality is not forced (``anygpt chat`` without ``/output``): the
model decides, and the reply is read the way the chat CLI shows it (its text; its media as the
codes the session keeps and writes as files). Each item records the question, the session's seed
(``anygpt chat --seed``), the modality the reply came in and the prompt the model was given, so an
item can be replayed with ``anygpt chat --script``.

:func:`task_multi_turn` runs scripted multi-turn sessions over held-out pictures: a caption turn,
"say it" (speech), the same question again, a drawing request, a new picture. Per turn it scores
whether the reply came in the asked modality, and it scores later-turn captions like first-turn
ones.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from anygpt.eval import metrics as M
from anygpt.eval.evalset import EvalItem
from anygpt.eval.steps import IMAGE_KEYS, TaskContext, not_scored, vocabularies
from anygpt.utils import safe_name

# What a user types. Media → text: a question about the attached file; text → media: a request
# around the item's reference text. Phrasings other than the training pools' on purpose: a user
# does not know them.
QUESTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("image", "text"): ("What is in this picture?", "What do you see in this picture?", "Describe this picture."),
    ("speech", "text"): ("Transcribe this.", "What does this recording say?", "Write down what is said here."),
    ("music", "text"): ("What instrument is playing?", "Describe this music.", "What is this melody played on?"),
    ("text", "image"): ("Draw {t}.", "Please draw {t}.", "Make a picture of {t}."),
    ("text", "speech"): ("Say this out loud: {t}", "Please say: {t}", "Read this aloud: {t}"),
    ("text", "music"): ("Play {t}.", "Compose {t}.", "Can you play {t}?"),
}
SAY_IT = "Say it."  # multi-turn: speak the previous answer
CHAT_MEDIA = "chat"  # OUT/chat/<task>/<item>/: the files the sessions wrote


@dataclass
class ChatTurn:
    """One chat turn as the evaluation saw it."""

    question: str
    asked: str  # the modality the question asks for
    text: str  # the reply's text, as the chat CLI prints it
    modality: str  # the reply's modality: its first media span's, else "text" ("none" when empty)
    codes: list[int] = field(default_factory=list)  # the reply's codes of the asked media modality
    prompt: str = ""  # the prompt as token strings
    error: str | None = None

    @property
    def in_asked_modality(self) -> bool:
        return self.modality == self.asked

    def record(self) -> dict[str, Any]:
        out = {"question": self.question, "asked": self.asked, "reply_modality": self.modality, "reply": self.text}
        if self.error:
            out["error"] = self.error
        return out


def session_seed(seed: int, task: str, item_id: str) -> int:
    """The seed of one item's session: fixed by the run's seed, the task and the item (the same
    draws whatever else is evaluated), small enough for ``anygpt chat --seed``."""
    return zlib.crc32(f"{seed}:{task}:{item_id}".encode()) % 100_000


def new_session(ctx: TaskContext, task: str, item_id: str) -> tuple[Any, int]:
    """A fresh :class:`ChatSession` as ``anygpt chat --model M --seed S`` builds it (the
    preset is chat's own default unless ``--chat-preset`` names one); returns it with its seed."""
    from anygpt.inference.chat import ChatSession

    seed = session_seed(ctx.cfg.seed, task, item_id)
    out = Path(ctx.cfg.out) / CHAT_MEDIA / task / safe_name(item_id)
    return ChatSession(ctx.bundle, preset=ctx.cfg.chat_preset, out_dir=out, seed=seed), seed


def ask(session: Any, question: str, asked: str, attachments: Sequence[Any] = ()) -> ChatTurn:
    """Send one turn (output not forced) and read the reply as the chat CLI shows it; a turn the
    session refuses (an unreadable attachment, a prompt too long) is an error turn, not a crash."""
    from anygpt.data.templates import MediaCodes
    from anygpt.modality.base import MediaError

    try:
        reply = session.send(question, list(attachments))
    except (MediaError, FileNotFoundError, ValueError) as e:
        return ChatTurn(question, asked, "", "none", error=f"{type(e).__name__}: {e}")
    content = session.history[-1].content  # the assistant turn the session keeps: text and codes
    media = [c for c in content if isinstance(c, MediaCodes)]
    modality = media[0].modality if media else ("text" if reply.text.strip() else "none")
    codes = [int(c) for m in media if m.modality == asked for c in m.codes][: _span_length(session, asked)]
    prompt = session.bundle.tokenizer.decode(reply.prompt, skip_special_tokens=False)
    return ChatTurn(question, asked, reply.text, modality, codes, prompt)


def _span_length(session: Any, modality: str) -> int | None:
    """A fixed-length modality's codes per item (the first item of a reply is scored)."""
    tok = session.bundle.tokenizers.get(modality)
    return None if tok is None else tok.code_layout.fixed_length


def question_for(ctx: TaskContext, source: str, target: str, text: str = "") -> str:
    """A question drawn from :data:`QUESTIONS` with the task's seeded rng."""
    return ctx.rng.choice(QUESTIONS[(source, target)]).format(t=text.strip().rstrip("."))


def asked_rate(turns: Sequence[ChatTurn], key: str = "asked_modality_rate") -> dict[str, float]:
    """``{key: share of turns answered in the asked modality, key_n: turns}`` (none: nothing)."""
    if not turns:
        return {}
    return {key: sum(t.in_asked_modality for t in turns) / len(turns), f"{key}_n": len(turns)}


def media_to_text(ctx: TaskContext, task: str, modality: str, items: Sequence[EvalItem]) -> tuple[list[EvalItem], list[str], list[dict]]:
    """Per item a fresh session: the file attached, a question; ``(items, reply texts, records)``.
    An item whose file the session cannot read is recorded in ``ctx.errors`` and skipped, as the
    harness path skips it; a reply in another modality counts, with empty text."""
    from anygpt.inference.chat import Attachment

    kept, texts, records, turns = [], [], [], []
    for it in items:
        session, seed = new_session(ctx, task, it.id)
        turn = ask(session, question_for(ctx, modality, "text"), "text", [Attachment(modality, str(it.path))])
        if turn.error:
            ctx.errors.append(f"{it.path}: {turn.error}")
            continue
        kept.append(it)
        texts.append(turn.text if turn.modality == "text" else "")
        records.append({**turn.record(), "seed": seed, "prompt": turn.prompt})
        turns.append(turn)
    ctx.chat_metrics.update(asked_rate(turns))
    return kept, texts, records


def text_to_media(ctx: TaskContext, task: str, modality: str, items: Sequence[EvalItem], texts: Sequence[str]) -> tuple[list[list[int]], list[dict]]:
    """Per item a fresh session and a typed request for ``modality``; ``(codes, records)``, the
    codes empty where the reply is not in ``modality``."""
    codes, records, turns = [], [], []
    for it, t in zip(items, texts):
        session, seed = new_session(ctx, task, it.id)
        turn = ask(session, question_for(ctx, "text", modality, t), modality)
        if turn.error:
            ctx.errors.append(f"{it.id}: {turn.error}")
        codes.append(turn.codes if turn.in_asked_modality else [])
        records.append({**turn.record(), "seed": seed, "prompt": turn.prompt})
        turns.append(turn)
    ctx.chat_metrics.update(asked_rate(turns))
    return codes, records


# ---------------------------------------------------------------------------- multi-turn sessions

# (kind, question, asked modality, which picture is attached: "first", "second" or None)
SCRIPT: tuple[tuple[str, str, str, str | None], ...] = (
    ("caption_first", "What is in this picture?", "text", "first"),
    ("say_it", SAY_IT, "speech", None),
    ("caption_again", "What is in this picture?", "text", None),
    ("draw", "Draw {t}.", "image", None),
    ("caption_new", "What is in this picture?", "text", "second"),
)
LATER_CAPTIONS = ("caption_again", "caption_new")


def task_multi_turn(ctx: TaskContext, items: Sequence[EvalItem]) -> tuple[dict, list[dict], list[str]]:
    """Scripted sessions (:data:`SCRIPT`) over held-out pictures, one per item up to
    ``cfg.sessions``: item ``i`` is the first picture, item ``i+1`` the second and item ``i+2``'s
    text the drawing request. Turns asking for a modality the model cannot output are left out.

    Metrics: ``asked_modality_rate`` over every turn and ``<kind>_asked_modality_rate`` per turn
    kind; ``later_caption_speech_rate``: later "What is in this picture?" turns answered with
    speech (issue 16's observation); caption accuracy on the first turn
    (``first_caption_attribute_accuracy``) and on later turns (``later_caption_…``, the same
    question about the first picture again and about a new one), scored like ``image_to_text``;
    drawings scored like ``text_to_image``."""
    from anygpt.data.shapes import analyse_image
    from anygpt.inference.chat import Attachment

    pictures = list(items)
    n = min(len(pictures), ctx.cfg.sessions) if len(pictures) >= 2 else 0
    outputs = {"text", *ctx.bundle.layout.modality_names}
    script = [s for s in SCRIPT if s[2] in outputs and (s[2] == "text" or s[2] in ctx.bundle.tokenizers)]
    vocab = vocabularies(pictures, IMAGE_KEYS)
    turns: dict[str, list[tuple[ChatTurn, EvalItem]]] = {kind: [] for kind, *_ in script}
    examples = []
    for i in range(n):
        first, second, request = pictures[i], pictures[(i + 1) % len(pictures)], pictures[(i + 2) % len(pictures)]
        session, seed = new_session(ctx, "multi_turn", first.id)
        record = {"id": first.id, "input": str(first.path), "second": str(second.path), "seed": seed, "turns": []}
        for kind, question, asked, attach in script:
            about = second if attach == "second" else first
            text = question.format(t=request.references[0].strip().rstrip("."))
            files = [Attachment("image", str(about.path))] if attach else []
            turn = ask(session, text, asked, files)
            if turn.error:
                ctx.errors.append(f"session {first.id}, {kind}: {turn.error}")
            target = request if kind == "draw" else about
            turns[kind].append((turn, target))
            rec = {"kind": kind, **turn.record()}
            if kind == "draw" and turn.in_asked_modality and turn.codes:
                try:
                    rec["recovered"] = {k: v for k, v in analyse_image(ctx.tokenizer("image").decode(turn.codes)).items() if k in IMAGE_KEYS}
                except Exception as e:  # an undecodable drawing is a wrong one: recorded
                    ctx.errors.append(f"session {first.id}, draw: decoding failed: {e}")
            elif asked == "text" and vocab:
                rec["recovered"] = M.extract_attributes(turn.text if turn.modality == "text" else "", vocab)
            if "recovered" in rec or kind == "draw":
                rec["attributes"] = {k: target.attributes.get(k) for k in IMAGE_KEYS}
            record["turns"].append(rec)
        examples.append(record)

    metrics: dict[str, Any] = {"n": n}
    every = [t for pairs in turns.values() for t, _ in pairs]
    metrics.update(asked_rate(every))
    for kind, pairs in turns.items():
        metrics.update(asked_rate([t for t, _ in pairs], f"{kind}_asked_modality_rate"))
    later = [t for k in LATER_CAPTIONS for t, _ in turns.get(k, [])]
    if later:
        metrics["later_caption_speech_rate"] = sum(t.modality == "speech" for t in later) / len(later)
        metrics["later_caption_speech_rate_n"] = len(later)
    per_turn = [r for e in examples for r in e["turns"]]

    def caption_accuracy(kinds: Sequence[str], key: str) -> None:
        recs = [r for r in per_turn if r["kind"] in kinds and "recovered" in r]
        if not recs or not vocab:
            not_scored(metrics, key, "no caption turn with colour and shape attributes to compare")
            return
        acc = M.attribute_accuracy([r["recovered"] for r in recs], [r["attributes"] for r in recs], list(vocab))
        metrics[key] = acc["attribute_accuracy"]
        metrics[f"{key}_n"] = len(recs)

    caption_accuracy(["caption_first"], "first_caption_attribute_accuracy")
    caption_accuracy(list(LATER_CAPTIONS), "later_caption_attribute_accuracy")
    for kind in LATER_CAPTIONS:
        caption_accuracy([kind], f"{kind}_attribute_accuracy")
    draws = [r for r in per_turn if r["kind"] == "draw"]
    if draws and all(isinstance(v, str) for r in draws for v in r["attributes"].values()):
        acc = M.attribute_accuracy([r.get("recovered") or {k: None for k in IMAGE_KEYS} for r in draws],
                                   [r["attributes"] for r in draws], list(IMAGE_KEYS))
        metrics["draw_attribute_accuracy"], metrics["draw_attribute_accuracy_n"] = acc["attribute_accuracy"], len(draws)
    return metrics, examples, []
