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
from anygpt.utils import atomic_path, atomic_write_text, safe_name

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
            raise ValueError(f"the model bundle has no {modality} tokenizer (tokenizers/{modality}/card.yaml)")
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
    from anygpt.media import audio_duration

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
    with atomic_path(path) as tmp:
        if hasattr(media, "save"):
            media.save(tmp, format="PNG")
        else:
            import soundfile as sf

            sf.write(str(tmp), np.asarray(media, dtype=np.float32).reshape(-1), int(sample_rate or 16000), format="WAV", subtype="PCM_16")
    return path


def _samples(ctx: _Ctx, task: str, decoded: Sequence[tuple[EvalItem, list[int], Any]], modality: str) -> dict[str, str]:
    """Write the first few generated media; ``{item id: path relative to OUT}``."""
    ext = "png" if modality == "image" else "wav"
    rate = getattr(ctx.tokenizer(modality), "sample_rate", None)
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


def _caption_metrics(items: Sequence[EvalItem], captions: Sequence[str]) -> dict[str, float]:
    refs = [it.references for it in items]
    return {"bleu4": M.bleu4(refs, captions), "cider_d": M.cider_d(refs, captions)[0]}


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
    metrics = {"n": len(its), "wer": M.word_error_rate(refs, hyps, numbers_as_words=True) if its else 1.0}
    if its:
        metrics["wer_ci95_low"], metrics["wer_ci95_high"] = M.wer_interval(refs, hyps, numbers_as_words=True)
    ctx.notes.append(WER_NOTE)
    plot = ctx.cfg.out / "asr_wer_histogram.png"
    plots.histogram_png(per, plot, "ASR: per-utterance WER", "WER")
    examples = [{"id": it.id, "input": str(it.path), "reference": r, "output": h, "wer": w} for it, r, h, w in zip(its, refs, hyps, per)]
    return metrics, examples, [plot.name]


def task_text_to_image(ctx: _Ctx, items: Sequence[EvalItem]) -> TaskResult:
    from anygpt.eval.image_analysis import resolve_image_analyser

    analyse, name = resolve_image_analyser()
    ctx.notes.append(f"image analysis: {name}")
    texts = [it.references[0] for it in items]
    decoded = _decode(ctx, "image", items, _to_media(ctx, "image", texts))
    pred = [dict(analyse(img)) for _, _, img in decoded]
    truth = [it.attributes for it, _, _ in decoded]
    keys = [k for k in IMAGE_KEYS if truth and all(k in t for t in truth)]
    metrics = {"n": len(decoded), **M.attribute_accuracy(pred, truth, keys)}
    if ctx.cfg.clip_model and decoded:
        metrics["clip_score"] = clip_score(ctx.cfg.clip_model, [it.references[0] for it, _, _ in decoded], [d[2] for d in decoded])
    samples = _samples(ctx, "text_to_image", decoded, "image")
    examples = [{"id": it.id, "input": it.references[0], "reference_media": str(it.path), "output_media": samples.get(it.id),
                 "n_codes": len(c), "attributes": it.attributes, "recovered": p} for (it, c, _), p in zip(decoded, pred)]
    return metrics, examples, _confusions(ctx, "text_to_image", truth, pred, keys)


def task_tts(ctx: _Ctx, items: Sequence[EvalItem]) -> TaskResult:
    enc = _encode(ctx, "speech", items)  # reference codes, for code similarity
    its = [e[0] for e in enc]
    refs = [it.references[0] for it in its]
    gen = _to_media(ctx, "speech", refs)
    own = _to_text(ctx, "speech", gen)
    metrics = {"n": len(its), "wer": M.word_error_rate(refs, own, numbers_as_words=True) if its else 1.0, "asr": "own"}
    ctx.notes.append(WER_NOTE + "; tts.wer uses the model's own ASR on its generated speech codes")
    metrics.update(M.code_similarity(gen, [e[1] for e in enc]))
    decoded = _decode(ctx, "speech", its, gen)
    if ctx.cfg.asr_model and decoded:
        rate = ctx.tokenizer("speech").sample_rate
        ext = external_asr(ctx.cfg.asr_model, [d[2] for d in decoded], rate)
        metrics["wer_external_asr"] = M.word_error_rate([d[0].references[0] for d in decoded], ext, numbers_as_words=True)
    samples = _samples(ctx, "tts", decoded, "speech")
    examples = [{"id": it.id, "input": r, "reference_media": str(it.path), "output_media": samples.get(it.id), "own_asr": h,
                 "n_codes": len(g), "n_reference_codes": len(e[1])} for it, r, h, g, e in zip(its, refs, own, gen, enc)]
    return metrics, examples, []


def task_text_to_music(ctx: _Ctx, items: Sequence[EvalItem]) -> TaskResult:
    from anygpt.eval.music_analysis import MusicAnalyzer

    tok = ctx.tokenizer("music")
    train = EvalSet.load(ctx.cfg.data, "music", splits=("train",), limit=ctx.cfg.music_train_limit)
    clips = _load(ctx, tok, [it for it in train if "instrument" in it.attributes])
    if not clips:
        raise ValueError(f"{train.manifest}: no training clips with an 'instrument' attribute to fit the music analyser")
    analyser = MusicAnalyzer().fit([c for _, c in clips], tok.sample_rate, [it.attributes for it, _ in clips])
    ctx.notes.append(f"music analyser fitted on {len(clips)} training clips of {train.manifest}")
    real = _load(ctx, tok, items)
    ceiling = [analyser.analyse(w, tok.sample_rate) for _, w in real]
    decoded = _decode(ctx, "music", items, _to_media(ctx, "music", [it.references[0] for it in items]))
    got = [analyser.analyse(w, tok.sample_rate) for _, _, w in decoded]

    def acc(pairs, key):
        pairs = [(p, t) for p, t in pairs if key in t]
        return sum(MusicAnalyzer.value_matches(p.get(key), t[key]) for p, t in pairs) / len(pairs) if pairs else None

    metrics: dict[str, Any] = {"n": len(decoded)}
    for key in MUSIC_KEYS:
        a = acc([(g, it.attributes) for g, (it, _, _) in zip(got, decoded)], key)
        c = acc([(g, it.attributes) for g, (it, _) in zip(ceiling, real)], key)
        if a is not None:
            metrics[f"{key}_accuracy"] = a
        if c is not None:
            metrics[f"analyser_{key}_accuracy_on_real_clips"] = c
    samples = _samples(ctx, "text_to_music", decoded, "music")
    examples = [{"id": it.id, "input": it.references[0], "reference_media": str(it.path), "output_media": samples.get(it.id),
                 "attributes": it.attributes, "recovered": g} for (it, _, _), g in zip(decoded, got)]
    plot = _confusions(ctx, "text_to_music", [it.attributes for it, _, _ in decoded], got, ["instrument"]) if decoded else []
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
        if task == "text_to_music":
            find_manifest(cfg.data, "music", ("train",))
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
