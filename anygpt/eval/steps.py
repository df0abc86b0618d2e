"""The steps every evaluation task shares: the run's configuration and context, loading and
encoding held-out media, batched generation with the output modality forced (the harness path),
decoding generated codes, and writing sample media. The tasks (:mod:`anygpt.eval.tasks`) are built
from these and from the chat path's steps (:mod:`anygpt.eval.chat_path`)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from anygpt.data.templates import MediaCodes
from anygpt.eval import metrics as M
from anygpt.eval.evalset import EvalItem
from anygpt.eval.generation import Generator, build_prompt, generated_text, media_codes, task_content
from anygpt.inference.settings import GenerationSettings
from anygpt.utils import safe_name

TASK_IO: dict[str, tuple[str, str]] = {
    "image_to_text": ("image", "text"),
    "text_to_image": ("text", "image"),
    "asr": ("speech", "text"),
    "tts": ("text", "speech"),
    "music_to_text": ("music", "text"),
    "text_to_music": ("text", "music"),
}
TASK_IO["multi_turn"] = ("image", "text")  # chat path only: sessions over held-out pictures
TASK_NAMES = tuple(TASK_IO)
PATHS = ("harness", "chat", "both")  # --path: the evaluation's own prompt, the chat session, or each
CHAT_ONLY = ("multi_turn",)
IMAGE_KEYS = ("colour", "shape")
MUSIC_KEYS = ("instrument", "tempo")
RESULTS_FILE = "results.json"
WER_NOTE = "WER over normalised text: lowercase, punctuation removed, digits spelled as words"


@dataclass
class EvalConfig:
    """What to evaluate and how (the ``anygpt eval`` flags)."""

    data: Path
    out: Path
    tasks: Sequence[str] = TASK_NAMES
    limit: int | None = None
    preset: str = "default"
    seed: int = 0
    batch_size: int = 8
    n_examples: int = 5  # examples copied into each task JSON
    n_samples: int = 4  # media samples written under OUT/samples/<task>/
    asr_model: Path | None = None  # local transformers ASR model dir (e.g. Whisper) for TTS
    clip_model: Path | None = None  # local CLIP dir for text→image
    clap_model: Path | None = None  # local CLAP dir for text→music
    music_train_limit: int = 200  # training clips the music analyser is fitted on
    path: str = "both"  # harness, chat or both (see PATHS)
    chat_preset: str | None = None  # the chat path's preset; None: chat's own default (what `anygpt chat` uses)
    sessions: int = 30  # multi_turn: scripted sessions (at most one per held-out picture)


@dataclass
class TaskContext:
    """One evaluation run as the tasks see it: config, bundle, generator, decoding settings per
    output modality, the task's seeded ``rng`` and what it records (``errors``, ``notes``)."""

    cfg: EvalConfig
    bundle: Any
    generate: Generator
    generator_name: str
    settings: dict[str, GenerationSettings]
    path: str = "harness"  # "harness" or "chat": how the tasks ask the model
    rng: random.Random = field(default_factory=random.Random)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chat_metrics: dict[str, float] = field(default_factory=dict)  # chat path: what the sessions measured

    def name(self, task: str) -> str:
        """What this run of ``task`` is called in ``results.json``, its JSON and plot files
        (:func:`result_key`)."""
        return result_key(task, self.path)

    def tokenizer(self, modality: str) -> Any:
        """The bundle's tokenizer for ``modality`` (see :func:`bundle_tokenizer`)."""
        return bundle_tokenizer(self.bundle, modality)


def result_key(task: str, path: str) -> str:
    """A result's name in ``results.json`` (and its file ``OUT/<name>.json``): the task on the
    harness path and for the chat-only tasks, ``<task>.chat`` for a task's chat-path run."""
    return f"{task}.chat" if path == "chat" and task not in CHAT_ONLY else task


def bundle_tokenizer(bundle: Any, modality: str) -> Any:
    """The bundle's tokenizer for ``modality``; a missing one raises saying how to add it."""
    t = bundle.tokenizers.get(modality)
    if t is None:
        raise ValueError(f"{bundle.path}: the model has no {modality} tokenizer (tokenizers/{modality}/card.yaml is missing); "
                         f"re-export with export.cards='{{\"{modality}\": \"CARD\"}}' or copy the card folder there")
    return t


NOT_SCORED = "not_scored"  # metrics key: {metric: why it has no number}


def not_scored(metrics: dict, metric: str, reason: str) -> dict:
    """Record that ``metric`` has no value and why (nothing to compare is never a score)."""
    metrics.setdefault(NOT_SCORED, {})[metric] = reason
    return metrics


def vocabularies(items: Sequence[EvalItem], keys: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """Attribute vocabularies from the values the manifests hold (string values only), with the
    default aliases (``gray`` for ``grey``…)."""
    out = {}
    for k in keys:
        vals = [it.attributes.get(k) for it in items]
        if vals and all(isinstance(v, str) for v in vals):
            out[k] = M.vocabulary_from_values(vals, M.ALIASES.get(k))
    return out


# ---------------------------------------------------------------------------- shared steps

def chunks(seq: Sequence, n: int) -> Iterator[Sequence]:
    """``seq`` in consecutive pieces of ``n`` (at least 1)."""
    for i in range(0, len(seq), max(1, n)):
        yield seq[i : i + n]


def load_media_items(ctx: TaskContext, tok: Any, items: Sequence[EvalItem]) -> list[tuple[EvalItem, Any]]:
    """``(item, media)`` for the items whose media loads; failures recorded and skipped."""
    out = []
    for it in items:
        try:
            out.append((it, load_item(ctx, tok, it)))
        except Exception as e:  # bad media: record, go on
            ctx.errors.append(f"{it.path}: {e}")
    return out


def load_item(ctx: TaskContext, tok: Any, it: EvalItem) -> Any:
    """An item's media; audio through the same windows as chat: the item's ``start``/``length``
    attributes, else the preset's window, else (a recording longer than the tokenizer takes) its
    first default window, noted in the report."""
    if tok.modality == "image":
        return tok.load_media(it.path)
    from anygpt.inference.settings import InputWindow, input_window, resolve_window
    from anygpt.modality.media import audio_duration

    a = it.attributes
    if a.get("start") is not None or a.get("length") is not None:
        window: InputWindow | None = InputWindow(a.get("start") or 0.0, a.get("length"))
    else:
        window = input_window(ctx.cfg.preset, ctx.bundle.template.name, tok.modality)
    start, length, note = resolve_window(it.path, tok.modality, audio_duration(it.path), window,
                                         tok.default_window_seconds, tok.max_seconds, ctx.rng)
    if note:
        ctx.notes.append(note)
    return tok.load_media(it.path) if start == 0.0 and length is None else tok.load_window(it.path, start, length)


def encode(ctx: TaskContext, modality: str, items: Sequence[EvalItem]) -> list[tuple[EvalItem, list[int], Any]]:
    """Load and encode media in batches: ``(item, codes, media)``; failures recorded and skipped."""
    tok = ctx.tokenizer(modality)
    out = []
    for batch in chunks(items, ctx.cfg.batch_size):
        loaded = load_media_items(ctx, tok, batch)
        if loaded:
            codes = tok.encode([m for _, m in loaded])
            out += [(it, [int(c) for c in np.asarray(c).reshape(-1)], m) for (it, m), c in zip(loaded, codes)]
    return out


def generate(ctx: TaskContext, prompts: list[list[int]], output_modality: str,
              requests: Sequence[str] | None = None) -> list[list[int]]:
    """Generated ids per prompt, in batches; ``requests``: the text each prompt asks for (text → media)."""
    settings = ctx.settings[output_modality]
    out: list[list[int]] = []
    for k in range(0, len(prompts), ctx.cfg.batch_size):
        batch = list(prompts[k:k + ctx.cfg.batch_size])
        asked = None if requests is None else list(requests[k:k + ctx.cfg.batch_size])
        out += [list(map(int, g)) for g in ctx.generate(ctx.bundle, batch, output_modality, settings, requests=asked)]
    return out


def to_text(ctx: TaskContext, modality: str, codes: Sequence[Sequence[int]]) -> list[str]:
    """Media codes → the model's text reply (captions, transcripts)."""
    prompts = [build_prompt(ctx.bundle, task_content(MediaCodes(modality, c), modality, "text", ctx.rng), "text") for c in codes]
    return [generated_text(ctx.bundle, g) for g in generate(ctx, prompts, "text")]


def to_media(ctx: TaskContext, modality: str, texts: Sequence[str]) -> list[list[int]]:
    """Texts → generated codes of ``modality``."""
    prompts = [build_prompt(ctx.bundle, task_content(t, "text", modality, ctx.rng), modality) for t in texts]
    return [media_codes(ctx.bundle, modality, g) for g in generate(ctx, prompts, modality, requests=texts)]


def decode(ctx: TaskContext, modality: str, items: Sequence[EvalItem], codes: Sequence[Sequence[int]]) -> list[tuple[EvalItem, list[int], Any]]:
    """``(item, codes, media)`` for the generated codes that decode; failures recorded and skipped."""
    tok = ctx.tokenizer(modality)
    out = []
    for it, c in zip(items, codes):
        try:
            out.append((it, list(c), tok.decode(np.asarray(c, dtype=np.int64))))
        except Exception as e:  # a model can emit codes a detokenizer rejects: record, go on
            ctx.errors.append(f"{it.id}: decoding {len(c)} {modality} codes failed: {e}")
    return out


def write_samples(ctx: TaskContext, task: str, decoded: Sequence[tuple[EvalItem, list[int], Any]], modality: str) -> dict[str, str]:
    """Write the first few generated media; ``{item id: path relative to OUT}``."""
    ext = "png" if modality == "image" else "wav"
    tok = ctx.tokenizer(modality)
    out = {}
    for it, _, media in decoded[: ctx.cfg.n_samples]:
        rel = Path("samples") / ctx.name(task) / f"{safe_name(it.id)}.{ext}"
        tok.save_media(media, ctx.cfg.out / rel)  # the modality's own writer: PNG or 16-bit WAV, atomic
        out[it.id] = rel.as_posix()
    return out
