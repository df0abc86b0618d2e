"""The evaluation harness behind ``anygpt eval``: held-out manifests → prompts → batched generation
with the output modality forced → decoded media/text → scores, one JSON per task plus plots.

Tasks (input → output, what is scored):

=============== ================= ===========================================================
image_to_text   image → text      BLEU-4, CIDEr-D, attribute accuracy (colour and shape both right)
text_to_image   text → image      attributes recovered from the decoded picture; CLIP score (optional)
asr             speech → text     WER over normalised text; per-utterance WER histogram
tts             text → speech     WER of an ASR over the generated speech (the model's own ASR; a
                                  local Whisper-style model when given) and code similarity to the
                                  reference codes
music_to_text   music → text      instrument (and tempo) accuracy from the caption, BLEU-4, CIDEr-D
text_to_music   text → music      instrument/tempo recovered from the decoded audio by a
                                  :class:`MusicAnalyzer` fitted on the *training* clips
=============== ================= ===========================================================

Each task writes ``OUT/<task>.json`` (metrics incl. ``n``, decoding settings, seed, split,
examples, plots, errors) and :func:`run_eval` writes ``OUT/results.json`` (task → metrics,
decoding settings, seed). Items that fail to load or decode are recorded and skipped; a task that
fails as a whole gets ``"failed": reason`` in its JSON and the other tasks still run.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from anygpt.data.templates import MediaCodes
from anygpt.eval import metrics as M
from anygpt.eval import plots
from anygpt.eval.evalset import EvalItem, EvalSet, find_manifest
from anygpt.eval.generation import (
    Generator, build_prompt, decoding_settings, generated_text, media_codes, resolve_generator, task_content,
)
from anygpt.modality.media import save_audio, save_image
from anygpt.utils import atomic_write_text, safe_name

TASK_IO: dict[str, tuple[str, str]] = {
    "image_to_text": ("image", "text"),
    "text_to_image": ("text", "image"),
    "asr": ("speech", "text"),
    "tts": ("text", "speech"),
    "music_to_text": ("music", "text"),
    "text_to_music": ("text", "music"),
}
TASK_NAMES = tuple(TASK_IO)
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


@dataclass
class _Ctx:
    cfg: EvalConfig
    bundle: Any
    generate: Generator
    generator_name: str
    settings: dict[str, dict]
    rng: random.Random = field(default_factory=random.Random)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def tokenizer(self, modality: str):
        t = self.bundle.tokenizers.get(modality)
        if t is None:
            raise ValueError(f"{self.bundle.path}: the model has no {modality} tokenizer (tokenizers/{modality}/card.yaml is missing); "
                             f"re-export with export.cards='{{\"{modality}\": \"CARD\"}}' or copy the card folder there")
        return t


# ---------------------------------------------------------------------------- shared steps

def _chunks(seq: Sequence, n: int):
    for i in range(0, len(seq), max(1, n)):
        yield seq[i : i + n]


def _load(ctx: _Ctx, tok: Any, items: Sequence[EvalItem]) -> list[tuple[EvalItem, Any]]:
    """``(item, media)`` for the items whose media loads; failures recorded and skipped."""
    out = []
    for it in items:
        try:
            out.append((it, _load_item(ctx, tok, it)))
        except Exception as e:  # bad media: record, go on
            ctx.errors.append(f"{it.path}: {e}")
    return out


def _load_item(ctx: _Ctx, tok: Any, it: EvalItem) -> Any:
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


def _encode(ctx: _Ctx, modality: str, items: Sequence[EvalItem]) -> list[tuple[EvalItem, list[int], Any]]:
    """Load and encode media in batches: ``(item, codes, media)``; failures recorded and skipped."""
    tok = ctx.tokenizer(modality)
    out = []
    for batch in _chunks(items, ctx.cfg.batch_size):
        loaded = _load(ctx, tok, batch)
        if loaded:
            codes = tok.encode([m for _, m in loaded])
            out += [(it, [int(c) for c in np.asarray(c).reshape(-1)], m) for (it, m), c in zip(loaded, codes)]
    return out


def _generate(ctx: _Ctx, prompts: list[list[int]], output_modality: str,
              requests: Sequence[str] | None = None) -> list[list[int]]:
    """Generated ids per prompt, in batches; ``requests``: the text each prompt asks for (text → media)."""
    settings = ctx.settings[output_modality]
    out: list[list[int]] = []
    for k in range(0, len(prompts), ctx.cfg.batch_size):
        batch = list(prompts[k:k + ctx.cfg.batch_size])
        asked = None if requests is None else list(requests[k:k + ctx.cfg.batch_size])
        out += [list(map(int, g)) for g in ctx.generate(ctx.bundle, batch, output_modality, settings, requests=asked)]
    return out


def _to_text(ctx: _Ctx, modality: str, codes: Sequence[Sequence[int]]) -> list[str]:
    """Media codes → the model's text reply (captions, transcripts)."""
    prompts = [build_prompt(ctx.bundle, task_content(MediaCodes(modality, c), modality, "text", ctx.rng), "text") for c in codes]
    return [generated_text(ctx.bundle, g) for g in _generate(ctx, prompts, "text")]


def _to_media(ctx: _Ctx, modality: str, texts: Sequence[str]) -> list[list[int]]:
    """Texts → generated codes of ``modality``."""
    prompts = [build_prompt(ctx.bundle, task_content(t, "text", modality, ctx.rng), modality) for t in texts]
    return [media_codes(ctx.bundle, modality, g) for g in _generate(ctx, prompts, modality, requests=texts)]


def _decode(ctx: _Ctx, modality: str, items: Sequence[EvalItem], codes: Sequence[Sequence[int]]) -> list[tuple[EvalItem, list[int], Any]]:
    tok = ctx.tokenizer(modality)
    out = []
    for it, c in zip(items, codes):
        try:
            out.append((it, list(c), tok.decode(np.asarray(c, dtype=np.int64))))
        except Exception as e:  # a model can emit codes a detokenizer rejects: record, go on
            ctx.errors.append(f"{it.id}: decoding {len(c)} {modality} codes failed: {e}")
    return out


def save_media(media: Any, path: Path, sample_rate: int | None = None) -> Path:
    """A PIL image as PNG, or a mono waveform as 16-bit WAV (atomic)."""
    if hasattr(media, "save"):
        return save_image(media, path)
    return save_audio(media, int(sample_rate or 16000), path)


def _samples(ctx: _Ctx, task: str, decoded: Sequence[tuple[EvalItem, list[int], Any]], modality: str) -> dict[str, str]:
    """Write the first few generated media; ``{item id: path relative to OUT}``."""
    ext = "png" if modality == "image" else "wav"
    rate = ctx.tokenizer(modality).sample_rate
    out = {}
    for it, _, media in decoded[: ctx.cfg.n_samples]:
        rel = Path("samples") / task / f"{safe_name(it.id)}.{ext}"
        save_media(media, ctx.cfg.out / rel, rate)
        out[it.id] = rel.as_posix()
    return out


def _vocabularies(items: Sequence[EvalItem], keys: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """Attribute vocabularies from the values the manifests hold (string values only), with the
    default aliases (``gray`` for ``grey``…)."""
    out = {}
    for k in keys:
        vals = [it.attributes.get(k) for it in items]
        if vals and all(isinstance(v, str) for v in vals):
            out[k] = M.vocabulary_from_values(vals, M.DEFAULT_VOCABULARIES.get(k))
    return out


def _confusions(ctx: _Ctx, task: str, truth: Sequence[dict], pred: Sequence[dict], keys: Sequence[str]) -> list[str]:
    paths = []
    for k in keys:
        p = ctx.cfg.out / f"{task}_{k}_confusion.png"
        plots.confusion_matrix_png([t.get(k) for t in truth], [q.get(k) for q in pred], p, f"{task}: {k}")
        paths.append(p.name)
    return paths


NOT_SCORED = "not_scored"  # metrics key: {metric: why it has no number}


def not_scored(metrics: dict, metric: str, reason: str) -> dict:
    """Record that ``metric`` has no value and why (nothing to compare is never a score)."""
    metrics.setdefault(NOT_SCORED, {})[metric] = reason
    return metrics


def _caption_metrics(items: Sequence[EvalItem], captions: Sequence[str]) -> dict[str, Any]:
    refs = [[r for r in it.references if str(r).strip()] for it in items]
    keep = [i for i, r in enumerate(refs) if r]
    out: dict[str, Any] = {}
    if not keep:
        for k in ("bleu4", "cider_d"):
            not_scored(out, k, "no item has a non-empty reference 'text'" if items else "no item loaded")
        return out
    refs, hyps = [refs[i] for i in keep], [captions[i] for i in keep]
    out.update({"bleu4": M.bleu4(refs, hyps), "cider_d": M.cider_d(refs, hyps)[0]})
    if len(keep) < len(items):
        out["n_with_reference"] = len(keep)
    return out


def _missing_attributes(items: Sequence[EvalItem], keys: Sequence[str], what: str) -> str:
    """Why attribute accuracy cannot be scored on ``items`` (which keys the manifest lacks)."""
    if not items:
        return "no item loaded"
    return (f"manifest lines need string 'attributes' {' and '.join(repr(k) for k in keys)} on every item "
            f"to score {what} (the demo corpus declares them; see docs/eval-manifests.md)")


def _read_back(ctx: _Ctx, modality: str, codes: Sequence[Sequence[int]], texts: Sequence[str]) -> dict[str, Any]:
    """The model's own read-back of generated media: ``read_back_logp`` (mean log p(request |
    media) per request word) and ``read_back_match_accuracy``: how often a generated item reads
    back as its own request more than as another item's request (chance 0.5). Scores with no
    labels, from the model itself, so they say whether outputs follow their prompts, not how good
    they look or sound; pair with ``_reference`` (the same scores of the real media) for scale."""
    from anygpt.inference.generation import read_back_scores

    out: dict[str, Any] = {}
    pairs = [(list(c), t) for c, t in zip(codes, texts) if len(c) and str(t).strip()]
    if not pairs:
        return not_scored(out, "read_back_logp", "no generated item with codes and a request text")
    cs, ts = [p[0] for p in pairs], [p[1] for p in pairs]
    own = read_back_scores(ctx.bundle, modality, cs, ts, batch_size=ctx.cfg.batch_size)
    n_words = [max(1, len(str(t).split())) for t in ts]
    out["read_back_logp"] = float(np.mean([s / w for s, w in zip(own, n_words)]))
    others = [(i, j) for i in range(len(ts)) for j in [(i + 1) % len(ts)] if j != i and ts[j].strip().lower() != ts[i].strip().lower()]
    if not others:
        return not_scored(out, "read_back_match_accuracy", "needs at least two items with different request texts")
    other = read_back_scores(ctx.bundle, modality, [cs[i] for i, _ in others], [ts[j] for _, j in others], batch_size=ctx.cfg.batch_size)
    # per word, so a longer other request is not penalised for its length alone
    wins = [own[i] / n_words[i] > o / n_words[j] for (i, j), o in zip(others, other)]
    out["read_back_match_accuracy"] = float(np.mean(wins))
    out["read_back_n"] = len(wins)
    return out


# ---------------------------------------------------------------------------- tasks

TaskResult = tuple[dict, list[dict], list[str]]  # metrics, examples, plots


def _media_to_caption(ctx: _Ctx, task: str, modality: str, keys: Sequence[str], items: Sequence[EvalItem]) -> TaskResult:
    enc = _encode(ctx, modality, items)
    its = [e[0] for e in enc]
    captions = _to_text(ctx, modality, [e[1] for e in enc])
    vocab = _vocabularies(its, keys)
    pred = [M.extract_attributes(c, vocab) for c in captions]
    truth = [it.attributes for it in its]
    metrics = {"n": len(its), **_caption_metrics(its, captions)}
    if vocab:
        metrics.update(M.attribute_accuracy(pred, truth, list(vocab)))
    else:
        not_scored(metrics, "attribute_accuracy", _missing_attributes(its, keys[:1] if modality == "music" else keys, "attributes in captions"))
    examples = [{"id": it.id, "input": str(it.path), "reference": it.text, "output": c, "attributes": it.attributes, "recovered": p}
                for it, c, p in zip(its, captions, pred)]
    return metrics, examples, _confusions(ctx, task, truth, pred, list(vocab)) if its else []


def task_image_to_text(ctx: _Ctx, items: Sequence[EvalItem]) -> TaskResult:
    return _media_to_caption(ctx, "image_to_text", "image", IMAGE_KEYS, items)


def task_music_to_text(ctx: _Ctx, items: Sequence[EvalItem]) -> TaskResult:
    return _media_to_caption(ctx, "music_to_text", "music", MUSIC_KEYS, items)


def task_asr(ctx: _Ctx, items: Sequence[EvalItem]) -> TaskResult:
    enc = _encode(ctx, "speech", items)
    its = [e[0] for e in enc]
    hyps = _to_text(ctx, "speech", [e[1] for e in enc])
    refs = [it.references[0] for it in its]
    per = [M.utterance_wer(r, h, numbers_as_words=True) for r, h in zip(refs, hyps)]
    metrics: dict[str, Any] = {"n": len(its)}
    if its and any(M.words(r) for r in refs):
        metrics["wer"] = M.word_error_rate(refs, hyps, numbers_as_words=True)
        metrics["wer_ci95_low"], metrics["wer_ci95_high"] = M.wer_interval(refs, hyps, numbers_as_words=True)
    else:
        not_scored(metrics, "wer", "no utterance with a reference transcript ('text')" if its else "no utterance loaded")
    ctx.notes.append(WER_NOTE)
    plot = ctx.cfg.out / "asr_wer_histogram.png"
    plots.histogram_png(per, plot, "ASR: per-utterance WER", "WER")
    examples = [{"id": it.id, "input": str(it.path), "reference": r, "output": h, "wer": w} for it, r, h, w in zip(its, refs, hyps, per)]
    return metrics, examples, [plot.name]


def task_text_to_image(ctx: _Ctx, items: Sequence[EvalItem]) -> TaskResult:
    texts = [it.references[0] for it in items]
    gen = _to_media(ctx, "image", texts)
    decoded = _decode(ctx, "image", items, gen)
    truth = [it.attributes for it, _, _ in decoded]
    # the shape/colour analyser knows only the demo corpus's drawings: it runs where the items declare
    # what it recovers (every item has string colour and shape), never on arbitrary pictures
    keys = [k for k in IMAGE_KEYS if truth and all(isinstance(t.get(k), str) for t in truth)]
    metrics: dict[str, Any] = {"n": len(decoded)}
    pred: list[dict] = [{} for _ in decoded]
    if keys == list(IMAGE_KEYS):
        from anygpt.eval.image_analysis import resolve_image_analyser

        analyse, name = resolve_image_analyser()
        ctx.notes.append(f"image analysis: {name}")
        pred = [dict(analyse(img)) for _, _, img in decoded]
        metrics.update(M.attribute_accuracy(pred, truth, keys))
    else:
        keys = []
        not_scored(metrics, "attribute_accuracy", _missing_attributes(decoded, IMAGE_KEYS, "text_to_image by the demo's shape/colour analyser"))
    metrics.update(_read_back(ctx, "image", gen, texts))
    metrics.update(_reference_read_back(ctx, "image", items))
    if ctx.cfg.clip_model and decoded:
        metrics["clip_score"] = clip_score(ctx.cfg.clip_model, [it.references[0] for it, _, _ in decoded], [d[2] for d in decoded])
        real = _load(ctx, ctx.tokenizer("image"), [it for it, _, _ in decoded])
        if real:
            metrics["clip_score_reference"] = clip_score(ctx.cfg.clip_model, [it.references[0] for it, _ in real], [m for _, m in real])
    elif not ctx.cfg.clip_model:
        not_scored(metrics, "clip_score", "no --clip-model given (a local CLIP directory)")
    samples = _samples(ctx, "text_to_image", decoded, "image")
    examples = [{"id": it.id, "input": it.references[0], "reference_media": str(it.path), "output_media": samples.get(it.id),
                 "n_codes": len(c), "attributes": it.attributes, "recovered": p} for (it, c, _), p in zip(decoded, pred)]
    return metrics, examples, _confusions(ctx, "text_to_image", truth, pred, keys)


def _reference_read_back(ctx: _Ctx, modality: str, items: Sequence[EvalItem]) -> dict[str, Any]:
    """The read-back scores of the real media (their own codes) beside their texts: what the
    generated items' scores are to be compared with."""
    enc = _encode(ctx, modality, items)
    got = _read_back(ctx, modality, [e[1] for e in enc], [e[0].references[0] for e in enc])
    return {f"{k}_reference": v for k, v in got.items() if k != NOT_SCORED}


def task_tts(ctx: _Ctx, items: Sequence[EvalItem]) -> TaskResult:
    enc = _encode(ctx, "speech", items)  # reference codes, for code similarity
    its = [e[0] for e in enc]
    refs = [it.references[0] for it in its]
    gen = _to_media(ctx, "speech", refs)
    own = _to_text(ctx, "speech", gen)
    metrics: dict[str, Any] = {"n": len(its), "asr": "own"}
    if its and any(M.words(r) for r in refs):
        metrics["wer"] = M.word_error_rate(refs, own, numbers_as_words=True)
        metrics.update(M.code_similarity(gen, [e[1] for e in enc]))
    else:
        not_scored(metrics, "wer", "no utterance with a reference text ('text')" if its else "no utterance loaded")
    ctx.notes.append(WER_NOTE + "; tts.wer uses the model's own ASR on its generated speech codes")
    decoded = _decode(ctx, "speech", its, gen)
    if ctx.cfg.asr_model and decoded:
        rate = ctx.tokenizer("speech").sample_rate
        real = [m for _, _, m in enc]  # the same ASR on the real recordings: how far it is from 0 by itself
        ext = external_asr(ctx.cfg.asr_model, [d[2] for d in decoded] + real, rate)
        metrics["wer_external_asr"] = M.word_error_rate([d[0].references[0] for d in decoded], ext[: len(decoded)], numbers_as_words=True)
        metrics["wer_external_asr_reference"] = M.word_error_rate(refs, ext[len(decoded):], numbers_as_words=True)
    elif not ctx.cfg.asr_model:
        not_scored(metrics, "wer_external_asr", "no --asr-model given (a local Whisper-style directory)")
    samples = _samples(ctx, "tts", decoded, "speech")
    examples = [{"id": it.id, "input": r, "reference_media": str(it.path), "output_media": samples.get(it.id), "own_asr": h,
                 "n_codes": len(g), "n_reference_codes": len(e[1])} for it, r, h, g, e in zip(its, refs, own, gen, enc)]
    return metrics, examples, []


def _music_analyser(ctx: _Ctx, tok: Any) -> Any:
    """A :class:`MusicAnalyzer` fitted on the training clips that declare an ``instrument``, or
    None (with the reason in the notes) where there are none."""
    from anygpt.eval.music_analysis import MusicAnalyzer

    try:
        train = EvalSet.load(ctx.cfg.data, "music", splits=("train",), limit=ctx.cfg.music_train_limit)
    except FileNotFoundError:
        return None
    clips = _load(ctx, tok, [it for it in train if isinstance(it.attributes.get("instrument"), str)])
    if not clips:
        return None
    ctx.notes.append(f"music analyser fitted on {len(clips)} training clips of {train.manifest}")
    return MusicAnalyzer().fit([c for _, c in clips], tok.sample_rate, [it.attributes for it, _ in clips])


def task_text_to_music(ctx: _Ctx, items: Sequence[EvalItem]) -> TaskResult:
    from anygpt.eval.music_analysis import MusicAnalyzer

    tok = ctx.tokenizer("music")
    texts = [it.references[0] for it in items]
    gen = _to_media(ctx, "music", texts)
    decoded = _decode(ctx, "music", items, gen)
    metrics: dict[str, Any] = {"n": len(decoded)}
    analyser = _music_analyser(ctx, tok) if any(isinstance(it.attributes.get("instrument"), str) for it in items) else None
    got: list[dict] = [{} for _ in decoded]
    if analyser is not None:
        real = _load(ctx, tok, items)
        ceiling = [analyser.analyse(w, tok.sample_rate) for _, w in real]
        got = [analyser.analyse(w, tok.sample_rate) for _, _, w in decoded]

        def acc(pairs, key):
            pairs = [(p, t) for p, t in pairs if key in t]
            return sum(MusicAnalyzer.value_matches(p.get(key), t[key]) for p, t in pairs) / len(pairs) if pairs else None

        for key in MUSIC_KEYS:
            a = acc([(g, it.attributes) for g, (it, _, _) in zip(got, decoded)], key)
            c = acc([(g, it.attributes) for g, (it, _) in zip(ceiling, real)], key)
            if a is not None:
                metrics[f"{key}_accuracy"] = a
            if c is not None:
                metrics[f"analyser_{key}_accuracy_on_real_clips"] = c
    else:
        not_scored(metrics, "instrument_accuracy",
                   "needs string 'attributes' 'instrument' on the held-out items and on music training clips "
                   "(<data>/music/train.jsonl) to fit the music analyser; see docs/eval-manifests.md")
    metrics.update(_read_back(ctx, "music", gen, texts))
    metrics.update(_reference_read_back(ctx, "music", items))
    if ctx.cfg.clap_model and decoded:
        real_audio = _load(ctx, tok, [it for it, _, _ in decoded])
        scores = clap_score(ctx.cfg.clap_model, [it.references[0] for it, _, _ in decoded] + [it.references[0] for it, _ in real_audio],
                            [w for _, _, w in decoded] + [w for _, w in real_audio], tok.sample_rate)
        metrics["clap_score"] = float(np.mean(scores[: len(decoded)]))
        if real_audio:
            metrics["clap_score_reference"] = float(np.mean(scores[len(decoded):]))
    elif not ctx.cfg.clap_model:
        not_scored(metrics, "clap_score", "no --clap-model given (a local CLAP directory)")
    samples = _samples(ctx, "text_to_music", decoded, "music")
    examples = [{"id": it.id, "input": it.references[0], "reference_media": str(it.path), "output_media": samples.get(it.id),
                 "attributes": it.attributes, "recovered": g} for (it, _, _), g in zip(decoded, got)]
    plot = _confusions(ctx, "text_to_music", [it.attributes for it, _, _ in decoded], got, ["instrument"]) if decoded and analyser else []
    return metrics, examples, plot


TASKS: dict[str, Callable[[_Ctx, Sequence[EvalItem]], TaskResult]] = {
    "image_to_text": task_image_to_text,
    "text_to_image": task_text_to_image,
    "asr": task_asr,
    "tts": task_tts,
    "music_to_text": task_music_to_text,
    "text_to_music": task_text_to_music,
}


# ---------------------------------------------------------------------------- optional models

def external_asr(model_dir: str | os.PathLike, waves: Sequence[np.ndarray], sample_rate: int) -> list[str]:
    """Transcripts from a local transformers ASR model directory (e.g. Whisper); never downloads."""
    from transformers import pipeline

    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{model_dir}: --asr-model must be a local model directory")
    asr = pipeline("automatic-speech-recognition", model=str(model_dir), device="cpu")
    return [asr({"raw": np.asarray(w, dtype=np.float32), "sampling_rate": sample_rate})["text"] for w in waves]


def clip_score(model_dir: str | os.PathLike, texts: Sequence[str], images: Sequence[Any]) -> float:
    """Mean CLIPScore (100 · max(cos, 0)) with a local CLIP directory; never downloads."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{model_dir}: --clip-model must be a local model directory")
    from anygpt.utils import refuse_remote_code

    refuse_remote_code(model_dir)
    model = CLIPModel.from_pretrained(str(model_dir), trust_remote_code=False).eval()
    proc = CLIPProcessor.from_pretrained(str(model_dir), trust_remote_code=False)
    with torch.inference_mode():
        inp = proc(text=list(texts), images=[im.convert("RGB") for im in images], return_tensors="pt", padding=True, truncation=True)
        out = model(**inp)
        t = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        v = torch.nn.functional.normalize(out.image_embeds, dim=-1)
        return float((100 * (t * v).sum(-1).clamp(min=0)).mean())


# ---------------------------------------------------------------------------- driver

def clap_score(model_dir: str | os.PathLike, texts: Sequence[str], waves: Sequence[np.ndarray], sample_rate: int) -> list[float]:
    """CLAPScore (100 · max(cos, 0)) per (text, waveform) pair with a local CLAP directory; audio is
    resampled to the model's rate; never downloads."""
    import torch
    from transformers import ClapModel, ClapProcessor

    from anygpt.modality.media import resample

    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"{model_dir}: --clap-model must be a local model directory")
    model = ClapModel.from_pretrained(str(model_dir)).eval()
    proc = ClapProcessor.from_pretrained(str(model_dir))
    rate = int(proc.feature_extractor.sampling_rate)
    audio = [resample(np.asarray(w, dtype=np.float32).reshape(-1), sample_rate, rate) for w in waves]
    with torch.inference_mode():
        out = model(**proc.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=True),
                    **proc.feature_extractor(audio, sampling_rate=rate, return_tensors="pt"))
        t = torch.nn.functional.normalize(out.text_embeds, dim=-1)
        a = torch.nn.functional.normalize(out.audio_embeds, dim=-1)
        return (100 * (t * a).sum(-1).clamp(min=0)).tolist()


def parse_tasks(text: str | Sequence[str]) -> list[str]:
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown or names}; known: {', '.join(TASK_NAMES)}")
    return names


def evaluate_task(ctx: _Ctx, task: str) -> dict:
    """Run one task; returns (and writes) its result dict."""
    import torch

    in_mod, out_mod = TASK_IO[task]
    data_mod = out_mod if in_mod == "text" else in_mod
    ctx.rng = random.Random(f"{ctx.cfg.seed}:{task}")  # same prompts whatever the task order
    torch.manual_seed(ctx.cfg.seed)
    ctx.errors, ctx.notes = [], []
    t0 = time.time()
    evalset = EvalSet.load(ctx.cfg.data, data_mod, limit=ctx.cfg.limit)
    ctx.errors += evalset.errors
    failed = None
    try:
        metrics, examples, plot_files = TASKS[task](ctx, evalset.items)
    except Exception as e:  # one broken task must not lose the others: recorded, run_eval reports it
        failed = f"{type(e).__name__}: {e}"
        metrics, examples, plot_files = {"n": 0}, [], []
    result = {
        "task": task,
        "metrics": M.with_intervals(metrics),
        "n": metrics.get("n", 0),
        "decoding": {"output_modality": out_mod, **ctx.settings[out_mod], "preset": ctx.cfg.preset, "generator": ctx.generator_name},
        "seed": ctx.cfg.seed,
        "split": evalset.split,
        "manifest": str(evalset.manifest),
        "examples": examples[: ctx.cfg.n_examples],
        "plots": plot_files,
        "errors": ctx.errors,
        "notes": ctx.notes,
        "seconds": round(time.time() - t0, 2),
    }
    if failed:
        result["failed"] = failed
    atomic_write_text(ctx.cfg.out / f"{task}.json", json.dumps(result, indent=1, default=str))
    return result


def run_eval(cfg: EvalConfig, bundle: Any = None, model_dir: str | os.PathLike | None = None, generator: Generator | None = None,
             progress: Callable[[str], None] | None = print) -> dict[str, dict]:
    """Evaluate ``cfg.tasks`` on a loaded ``bundle`` (or the bundle at ``model_dir``); writes the
    per-task JSONs and ``results.json``; returns ``{task: result}``."""
    from anygpt.model.bundle import load_bundle

    tasks = parse_tasks(cfg.tasks)
    for task in tasks:  # fail on missing data before the (slow) model load
        in_mod, out_mod = TASK_IO[task]
        find_manifest(cfg.data, out_mod if in_mod == "text" else in_mod)
    if bundle is None:
        if model_dir is None:
            raise ValueError("run_eval needs a bundle or a model directory")
        bundle = load_bundle(model_dir)
    name = "custom"
    if generator is None:
        generator, name = resolve_generator()
    cfg.out = Path(cfg.out)
    cfg.out.mkdir(parents=True, exist_ok=True)
    ctx = _Ctx(cfg, bundle, generator, name, decoding_settings(cfg.preset, bundle))
    results = {}
    for task in tasks:
        if progress:
            progress(f"eval {task} …")
        results[task] = evaluate_task(ctx, task)
        if progress and "failed" in results[task]:
            progress(f"eval {task}: FAILED ({results[task]['failed']})")
        elif progress:
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in results[task]["metrics"].items()}
            progress(f"eval {task}: {shown}")
    summary = {t: {k: r[k] for k in ("metrics", "n", "decoding", "seed", "split", "failed") if k in r} for t, r in results.items()}
    atomic_write_text(cfg.out / RESULTS_FILE, json.dumps(summary, indent=1, default=str))
    return results
