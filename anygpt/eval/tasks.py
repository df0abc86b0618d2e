"""The evaluation tasks behind ``anygpt eval`` (table in :mod:`anygpt.eval.harness`): each
takes the run's :class:`~anygpt.eval.steps.TaskContext` and the held-out items and returns its
metrics, examples and plot files, on the path ``ctx.path`` names: ``harness`` (the evaluation's
own prompt, batched, output modality forced) or ``chat`` (:mod:`anygpt.eval.chat_path`: the chat
session a user talks to). Caption metrics and the model's read-back of generated media live here
too; ``multi_turn`` (chat path only) is :func:`anygpt.eval.chat_path.task_multi_turn`."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from anygpt.eval import chat_path, plots
from anygpt.eval import metrics as M
from anygpt.eval.evalset import EvalItem, EvalSet
from anygpt.eval.judges import clap_score, clip_score, external_asr
from anygpt.eval.steps import (
    IMAGE_KEYS, MUSIC_KEYS, NOT_SCORED, WER_NOTE, TaskContext, decode, encode, load_media_items, not_scored, to_media,
    to_text, vocabularies, write_samples,
)


def confusion_counts(truth: Sequence[dict], pred: Sequence[dict], keys: Sequence[str], top: int = 5) -> dict[str, list[list]]:
    """Per attribute, the most frequent wrong ``[true, predicted, count]`` over every item
    (``none``: nothing recovered): what the report's "what this run shows" cites."""
    from collections import Counter

    out = {}
    for k in keys:
        c = Counter((str(t.get(k)), "none" if q.get(k) is None else str(q.get(k))) for t, q in zip(truth, pred)
                    if str(q.get(k)).lower() != str(t.get(k)).lower())
        out[k] = [[a, b, n] for (a, b), n in c.most_common(top)]
    return out


def _confusions(ctx: TaskContext, task: str, truth: Sequence[dict], pred: Sequence[dict], keys: Sequence[str]) -> list[str]:
    paths = []
    for k in keys:
        p = ctx.cfg.out / f"{ctx.name(task)}_{k}_confusion.png"
        plots.confusion_matrix_png([t.get(k) for t in truth], [q.get(k) for q in pred], p, f"{ctx.name(task)}: {k}")
        paths.append(p.name)
    return paths


def _caption_metrics(items: Sequence[EvalItem], captions: Sequence[str]) -> dict[str, Any]:
    refs = [[r for r in it.references if str(r).strip()] for it in items]
    keep = [i for i, r in enumerate(refs) if r]
    out: dict[str, Any] = {}
    if not keep:
        for k in ("bleu4", "cider_d"):
            not_scored(out, k, "no item has a non-empty reference 'text'" if items else "no item loaded")
        return out
    refs, hyps = [refs[i] for i in keep], [captions[i] for i in keep]
    cider, per_item = M.cider_d(refs, hyps)
    out.update({"bleu4": M.bleu4(refs, hyps), "cider_d": cider})
    out["bleu4_ci95_low"], out["bleu4_ci95_high"] = M.resampled_interval(
        lambda ix: M.bleu4([refs[i] for i in ix], [hyps[i] for i in ix]), len(refs))
    out["cider_d_ci95_low"], out["cider_d_ci95_high"] = M.mean_interval(per_item)
    if len(keep) < len(items):
        out["n_with_reference"] = len(keep)
    return out


def _missing_attributes(items: Sequence[EvalItem], keys: Sequence[str], what: str) -> str:
    """Why attribute accuracy cannot be scored on ``items`` (which keys the manifest lacks)."""
    if not items:
        return "no item loaded"
    return (f"manifest lines need string 'attributes' {' and '.join(repr(k) for k in keys)} on every item "
            f"to score {what} (the demo corpus declares them; see docs/eval-manifests.md)")


def _read_back(ctx: TaskContext, modality: str, codes: Sequence[Sequence[int]], texts: Sequence[str]) -> dict[str, Any]:
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
    per_word = [s / w for s, w in zip(own, n_words)]
    out["read_back_logp"] = float(np.mean(per_word))
    out["read_back_logp_ci95_low"], out["read_back_logp_ci95_high"] = M.mean_interval(per_word)
    others = [(i, j) for i in range(len(ts)) for j in [(i + 1) % len(ts)] if j != i and ts[j].strip().lower() != ts[i].strip().lower()]
    if not others:
        return not_scored(out, "read_back_match_accuracy", "needs at least two items with different request texts")
    other = read_back_scores(ctx.bundle, modality, [cs[i] for i, _ in others], [ts[j] for _, j in others], batch_size=ctx.cfg.batch_size)
    # per word, so a longer other request is not penalised for its length alone
    wins = [own[i] / n_words[i] > o / n_words[j] for (i, j), o in zip(others, other)]
    out["read_back_match_accuracy"] = float(np.mean(wins))
    out["read_back_n"] = len(wins)
    return out


TaskResult = tuple[dict, list[dict], list[str]]  # metrics, examples, plots


def media_to_text(ctx: TaskContext, task: str, modality: str, items: Sequence[EvalItem]) -> tuple[list[EvalItem], list[str], list[dict]]:
    """The model's text for each item's media on ``ctx.path``: ``(items kept, texts, per-item
    records)`` (records: the chat turn's question, reply modality, seed and prompt; none on the
    harness path)."""
    if ctx.path == "chat":
        return chat_path.media_to_text(ctx, task, modality, items)
    enc = encode(ctx, modality, items)
    return [e[0] for e in enc], to_text(ctx, modality, [e[1] for e in enc]), [{} for _ in enc]


def text_to_media(ctx: TaskContext, task: str, modality: str, items: Sequence[EvalItem], texts: Sequence[str]) -> tuple[list[list[int]], list[dict]]:
    """Generated codes of ``modality`` for each request text on ``ctx.path`` (empty where a chat
    reply came in another modality) and per-item records."""
    if ctx.path == "chat":
        return chat_path.text_to_media(ctx, task, modality, items, texts)
    return to_media(ctx, modality, texts), [{} for _ in texts]


def _decoded_or_none(ctx: TaskContext, modality: str, items: Sequence[EvalItem], codes: Sequence[Sequence[int]]) -> list[Any]:
    """Per item its decoded media, or None (no codes, or codes the detokenizer rejects: recorded):
    an item the model gave nothing usable for is scored as wrong, never left out."""
    got = {id(it): m for it, _, m in decode(ctx, modality, [it for it, c in zip(items, codes) if c], [c for c in codes if c])}
    return [got.get(id(it)) for it in items]


def _media_to_caption(ctx: TaskContext, task: str, modality: str, keys: Sequence[str], items: Sequence[EvalItem]) -> TaskResult:
    its, captions, records = media_to_text(ctx, task, modality, items)
    vocab = vocabularies(its, keys)
    pred = [M.extract_attributes(c, vocab) for c in captions]
    truth = [it.attributes for it in its]
    metrics = {"n": len(its), **_caption_metrics(its, captions)}
    if vocab:
        metrics.update(M.attribute_accuracy(pred, truth, list(vocab)))
        metrics["confusions"] = confusion_counts(truth, pred, list(vocab))
    else:
        not_scored(metrics, "attribute_accuracy", _missing_attributes(its, keys[:1] if modality == "music" else keys, "attributes in captions"))
    examples = [{"id": it.id, "input": str(it.path), "reference": it.text, "output": c, "attributes": it.attributes, "recovered": p, **r}
                for it, c, p, r in zip(its, captions, pred, records)]
    return metrics, examples, _confusions(ctx, task, truth, pred, list(vocab)) if its else []


def task_image_to_text(ctx: TaskContext, items: Sequence[EvalItem]) -> TaskResult:
    return _media_to_caption(ctx, "image_to_text", "image", IMAGE_KEYS, items)


def task_music_to_text(ctx: TaskContext, items: Sequence[EvalItem]) -> TaskResult:
    return _media_to_caption(ctx, "music_to_text", "music", MUSIC_KEYS, items)


def task_asr(ctx: TaskContext, items: Sequence[EvalItem]) -> TaskResult:
    its, hyps, records = media_to_text(ctx, "asr", "speech", items)
    refs = [it.references[0] for it in its]
    per = [M.utterance_wer(r, h, numbers_as_words=True) for r, h in zip(refs, hyps)]
    metrics: dict[str, Any] = {"n": len(its)}
    if its and any(M.words(r) for r in refs):
        metrics["wer"] = M.word_error_rate(refs, hyps, numbers_as_words=True)
        metrics["wer_ci95_low"], metrics["wer_ci95_high"] = M.wer_interval(refs, hyps, numbers_as_words=True)
    else:
        not_scored(metrics, "wer", "no utterance with a reference transcript ('text')" if its else "no utterance loaded")
    ctx.notes.append(WER_NOTE)
    plot = ctx.cfg.out / f"{ctx.name('asr')}_wer_histogram.png"
    plots.histogram_png(per, plot, f"{ctx.name('asr')}: per-utterance WER", "WER")
    examples = [{"id": it.id, "input": str(it.path), "reference": r, "output": h, "wer": w, **rec}
                for it, r, h, w, rec in zip(its, refs, hyps, per, records)]
    return metrics, examples, [plot.name]


def task_text_to_image(ctx: TaskContext, items: Sequence[EvalItem]) -> TaskResult:
    texts = [it.references[0] for it in items]
    gen, records = text_to_media(ctx, "text_to_image", "image", items, texts)
    images = _decoded_or_none(ctx, "image", items, gen)
    decoded = [(it, c, im) for it, c, im in zip(items, gen, images) if im is not None]
    truth = [it.attributes for it in items]
    # the shape/colour analyser knows only the demo corpus's drawings: it runs where the items declare
    # what it recovers (every item has string colour and shape), never on arbitrary pictures
    keys = [k for k in IMAGE_KEYS if truth and all(isinstance(t.get(k), str) for t in truth)]
    metrics: dict[str, Any] = {"n": len(items)}
    pred: list[dict] = [{} for _ in items]
    if keys == list(IMAGE_KEYS):
        from anygpt.data.shapes import analyse_image

        ctx.notes.append("image analysis: anygpt.data.shapes.analyse_image")
        pred = [dict(analyse_image(im)) if im is not None else {k: None for k in keys} for im in images]
        metrics.update(M.attribute_accuracy(pred, truth, keys))
        metrics["confusions"] = confusion_counts(truth, pred, keys)
    else:
        keys = []
        not_scored(metrics, "attribute_accuracy", _missing_attributes(decoded, IMAGE_KEYS, "text_to_image by the demo's shape/colour analyser"))
    metrics.update(_read_back(ctx, "image", gen, texts))
    metrics.update(_reference_read_back(ctx, "image", items))
    if ctx.cfg.clip_model and decoded:
        metrics["clip_score"] = clip_score(ctx.cfg.clip_model, [it.references[0] for it, _, _ in decoded], [d[2] for d in decoded])
        real = load_media_items(ctx, ctx.tokenizer("image"), [it for it, _, _ in decoded])
        if real:
            metrics["clip_score_reference"] = clip_score(ctx.cfg.clip_model, [it.references[0] for it, _ in real], [m for _, m in real])
    elif not ctx.cfg.clip_model:
        not_scored(metrics, "clip_score", "no --clip-model given (a local CLIP directory)")
    samples = write_samples(ctx, "text_to_image", decoded, "image")
    examples = [{"id": it.id, "input": it.references[0], "reference_media": str(it.path), "output_media": samples.get(it.id),
                 "n_codes": len(c), "attributes": it.attributes, "recovered": p, **r} for it, c, p, r in zip(items, gen, pred, records)]
    return metrics, examples, _confusions(ctx, "text_to_image", truth, pred, keys)


def _reference_read_back(ctx: TaskContext, modality: str, items: Sequence[EvalItem]) -> dict[str, Any]:
    """The read-back scores of the real media (their own codes) beside their texts: what the
    generated items' scores are to be compared with (the same on either path: measured on the
    harness's only)."""
    if ctx.path == "chat":
        return {}
    enc = encode(ctx, modality, items)
    got = _read_back(ctx, modality, [e[1] for e in enc], [e[0].references[0] for e in enc])
    return {(k.replace("_ci95_", "_reference_ci95_") if "_ci95_" in k else f"{k}_reference"): v
            for k, v in got.items() if k != NOT_SCORED}


def task_tts(ctx: TaskContext, items: Sequence[EvalItem]) -> TaskResult:
    enc = encode(ctx, "speech", items)  # reference codes, for code similarity
    its = [e[0] for e in enc]
    refs = [it.references[0] for it in its]
    gen, records = text_to_media(ctx, "tts", "speech", its, refs)
    # the judge is the model's own ASR through the harness prompt on either path; no speech: nothing heard
    spoken = [k for k, g in enumerate(gen) if g]
    heard = to_text(ctx, "speech", [gen[k] for k in spoken])
    own = [""] * len(gen)
    for k, h in zip(spoken, heard):
        own[k] = h
    metrics: dict[str, Any] = {"n": len(its), "asr": "own"}
    if its and any(M.words(r) for r in refs):
        metrics["wer"] = M.word_error_rate(refs, own, numbers_as_words=True)
        metrics["wer_ci95_low"], metrics["wer_ci95_high"] = M.wer_interval(refs, own, numbers_as_words=True)
        metrics.update(M.code_similarity(gen, [e[1] for e in enc]))
    else:
        not_scored(metrics, "wer", "no utterance with a reference text ('text')" if its else "no utterance loaded")
    ctx.notes.append(WER_NOTE + "; tts.wer uses the model's own ASR on its generated speech codes")
    decoded = [(it, c, w) for it, c, w in zip(its, gen, _decoded_or_none(ctx, "speech", its, gen)) if w is not None]
    if ctx.cfg.asr_model and decoded:
        rate = ctx.tokenizer("speech").sample_rate
        real = [m for _, _, m in enc]  # the same ASR on the real recordings: how far it is from 0 by itself
        ext = external_asr(ctx.cfg.asr_model, [d[2] for d in decoded] + real, rate)
        metrics["wer_external_asr"] = M.word_error_rate([d[0].references[0] for d in decoded], ext[: len(decoded)], numbers_as_words=True)
        metrics["wer_external_asr_reference"] = M.word_error_rate(refs, ext[len(decoded):], numbers_as_words=True)
    elif not ctx.cfg.asr_model:
        not_scored(metrics, "wer_external_asr", "no --asr-model given (a local Whisper-style directory)")
    samples = write_samples(ctx, "tts", decoded, "speech")
    examples = [{"id": it.id, "input": r, "reference_media": str(it.path), "output_media": samples.get(it.id), "own_asr": h,
                 "n_codes": len(g), "n_reference_codes": len(e[1]), **rec} for it, r, h, g, e, rec in zip(its, refs, own, gen, enc, records)]
    return metrics, examples, []


def _music_analyser(ctx: TaskContext, tok: Any) -> Any:
    """A :class:`MusicAnalyzer` fitted on the training clips that declare an ``instrument``, or
    None (with the reason in the notes) where there are none."""
    from anygpt.eval.music_analysis import MusicAnalyzer

    try:
        train = EvalSet.load(ctx.cfg.data, "music", splits=("train",), limit=ctx.cfg.music_train_limit)
    except FileNotFoundError:
        return None
    clips = load_media_items(ctx, tok, [it for it in train if isinstance(it.attributes.get("instrument"), str)])
    if not clips:
        return None
    ctx.notes.append(f"music analyser fitted on {len(clips)} training clips of {train.manifest}")
    return MusicAnalyzer().fit([c for _, c in clips], tok.sample_rate, [it.attributes for it, _ in clips])


def task_text_to_music(ctx: TaskContext, items: Sequence[EvalItem]) -> TaskResult:
    from anygpt.eval.music_analysis import MusicAnalyzer

    tok = ctx.tokenizer("music")
    texts = [it.references[0] for it in items]
    gen, records = text_to_media(ctx, "text_to_music", "music", items, texts)
    waves = _decoded_or_none(ctx, "music", items, gen)
    decoded = [(it, c, w) for it, c, w in zip(items, gen, waves) if w is not None]
    metrics: dict[str, Any] = {"n": len(items)}
    analyser = _music_analyser(ctx, tok) if any(isinstance(it.attributes.get("instrument"), str) for it in items) else None
    got: list[dict] = [{} for _ in items]
    if analyser is not None:
        real = load_media_items(ctx, tok, items)
        ceiling = [analyser.analyse(w, tok.sample_rate) for _, w in real]
        got = [analyser.analyse(w, tok.sample_rate) if w is not None else {} for w in waves]

        def acc(pairs, key):
            pairs = [(p, t) for p, t in pairs if key in t]
            return sum(MusicAnalyzer.value_matches(p.get(key), t[key]) for p, t in pairs) / len(pairs) if pairs else None

        for key in MUSIC_KEYS:
            a = acc([(g, it.attributes) for g, it in zip(got, items)], key)
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
        real_audio = load_media_items(ctx, tok, [it for it, _, _ in decoded])
        scores = clap_score(ctx.cfg.clap_model, [it.references[0] for it, _, _ in decoded] + [it.references[0] for it, _ in real_audio],
                            [w for _, _, w in decoded] + [w for _, w in real_audio], tok.sample_rate)
        metrics["clap_score"] = float(np.mean(scores[: len(decoded)]))
        if real_audio:
            metrics["clap_score_reference"] = float(np.mean(scores[len(decoded):]))
    elif not ctx.cfg.clap_model:
        not_scored(metrics, "clap_score", "no --clap-model given (a local CLAP directory)")
    samples = write_samples(ctx, "text_to_music", decoded, "music")
    examples = [{"id": it.id, "input": it.references[0], "reference_media": str(it.path), "output_media": samples.get(it.id),
                 "attributes": it.attributes, "recovered": g, **r} for it, g, r in zip(items, got, records)]
    plot = _confusions(ctx, "text_to_music", [it.attributes for it in items], got, ["instrument"]) if items and analyser else []
    return metrics, examples, plot


TASKS: dict[str, Callable[[TaskContext, Sequence[EvalItem]], TaskResult]] = {
    "image_to_text": task_image_to_text,
    "text_to_image": task_text_to_image,
    "asr": task_asr,
    "tts": task_tts,
    "music_to_text": task_music_to_text,
    "text_to_music": task_text_to_music,
    "multi_turn": chat_path.task_multi_turn,
}
