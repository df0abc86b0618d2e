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
multi_turn      chat sessions     reply in the asked modality per turn; first- vs later-turn
                                  caption accuracy (chat path only)
=============== ================= ===========================================================

Each task runs on ``cfg.path``: ``harness`` (the prompt above, batched, the output modality
forced), ``chat`` (:mod:`anygpt.eval.chat_path`: the session ``anygpt chat`` runs, one per item,
the file attached to a natural question, the output not forced) or ``both``. Each run writes
``OUT/<task>.json`` (harness) or ``OUT/<task>.chat.json`` (metrics incl. ``n``, decoding
settings, seed, split, examples, plots, errors) and :func:`run_eval` writes ``OUT/results.json``
(name → task, path, metrics, decoding settings, seed). Items that fail to load or decode are recorded and skipped; a task that
fails as a whole gets ``"failed": reason`` in its JSON and the other tasks still run.

This module is the driver; the tasks are :mod:`anygpt.eval.tasks`, the steps they share
:mod:`anygpt.eval.steps`, the optional judge models :mod:`anygpt.eval.judges`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from anygpt.eval import metrics as M
from anygpt.eval.evalset import EvalSet, find_manifest
from anygpt.eval.generation import Generator, decoding_settings, default_generator
from anygpt.eval.steps import CHAT_ONLY, PATHS, RESULTS_FILE, result_key, TASK_IO, TASK_NAMES, EvalConfig, TaskContext
from anygpt.eval.tasks import TASKS
from anygpt.utils import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["EvalConfig", "PATHS", "RESULTS_FILE", "TASK_IO", "TASK_NAMES", "evaluate_task", "parse_tasks", "result_key", "run_eval"]


def parse_tasks(text: str | Sequence[str]) -> list[str]:
    """Task names from ``"asr,tts"`` or a list; an unknown or empty one raises listing the known ones."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise ValueError(f"unknown task(s) {unknown or names}; known: {', '.join(TASK_NAMES)}")
    return names


def _decoding(ctx: TaskContext, out_mod: str) -> dict[str, Any]:
    """The decoding settings a result records: the harness's preset, or the chat session's."""
    if ctx.path != "chat":
        return {"output_modality": out_mod, **ctx.settings[out_mod].to_dict(), "preset": ctx.cfg.preset, "generator": ctx.generator_name}
    from anygpt.inference.settings import default_preset, resolve_settings

    preset = ctx.cfg.chat_preset or default_preset(ctx.bundle.template)
    return {"output_modality": out_mod, "output": "not forced (the model picks, as `anygpt chat` without /output)",
            **resolve_settings(preset, out_mod, ctx.bundle.generation).to_dict(), "preset": preset,
            "template": ctx.bundle.template.id, "generator": "anygpt.inference.chat.ChatSession, one fresh session per item"}


def evaluate_task(ctx: TaskContext, task: str) -> dict:
    """Run one task on ``ctx.path``; returns (and writes) its result dict."""
    import torch

    in_mod, out_mod = TASK_IO[task]
    data_mod = out_mod if in_mod == "text" else in_mod
    key = result_key(task, ctx.path)
    ctx.rng = random.Random(f"{ctx.cfg.seed}:{task}")  # same prompts whatever the task order
    torch.manual_seed(ctx.cfg.seed)
    ctx.errors, ctx.notes, ctx.chat_metrics = [], [], {}
    t0 = time.time()
    evalset = EvalSet.load(ctx.cfg.data, data_mod, limit=ctx.cfg.limit)
    ctx.errors += evalset.errors
    failed = None
    try:
        metrics, examples, plot_files = TASKS[task](ctx, evalset.items)
        metrics = {**metrics, **ctx.chat_metrics}
    except Exception as e:  # one broken task must not lose the others: recorded, run_eval reports it
        failed = f"{type(e).__name__}: {e}"
        metrics, examples, plot_files = {"n": 0}, [], []
    result = {
        "task": task,
        "path": ctx.path,
        "metrics": M.with_intervals(metrics),
        "n": metrics.get("n", 0),
        "decoding": _decoding(ctx, out_mod),
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
    atomic_write_text(ctx.cfg.out / f"{key}.json", json.dumps(result, indent=1, default=str))
    return result


def paths_of(path: str) -> list[str]:
    """``both`` → harness then chat; an unknown name raises listing the known ones."""
    if path not in PATHS:
        raise ValueError(f"unknown evaluation path {path!r}; known: {', '.join(PATHS)}")
    return ["harness", "chat"] if path == "both" else [path]


def run_eval(cfg: EvalConfig, bundle: Any = None, model_dir: str | os.PathLike | None = None, generator: Generator | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Evaluate ``cfg.tasks`` on a loaded ``bundle`` (or the bundle at ``model_dir``) on
    ``cfg.path``; writes the per-result JSONs and ``results.json``; returns ``{result key:
    result}`` (:func:`result_key`). ``progress``: where the per-task lines go (default: this
    module's logger, which the CLI shows)."""
    from anygpt.model.bundle import load_bundle

    say = progress or log.info
    tasks = parse_tasks(cfg.tasks)
    paths = paths_of(cfg.path)
    if "chat" not in paths and any(t in CHAT_ONLY for t in tasks):
        if list(cfg.tasks) != list(TASK_NAMES):
            raise ValueError(f"{', '.join(t for t in tasks if t in CHAT_ONLY)} runs on the chat path only (--path chat or both)")
        tasks = [t for t in tasks if t not in CHAT_ONLY]
    for task in tasks:  # fail on missing data before the (slow) model load
        in_mod, out_mod = TASK_IO[task]
        find_manifest(cfg.data, out_mod if in_mod == "text" else in_mod)
    if bundle is None:
        if model_dir is None:
            raise ValueError("run_eval needs a bundle or a model directory")
        bundle = load_bundle(model_dir)
    name = "custom"
    if generator is None:
        generator, name = default_generator()
    cfg.out = Path(cfg.out)
    cfg.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for path in paths:
        ctx = TaskContext(cfg, bundle, generator, name, decoding_settings(cfg.preset, bundle), path=path)
        for task in tasks:
            if path == "harness" and task in CHAT_ONLY:
                continue
            key = result_key(task, path)
            say(f"eval {key} …")
            results[key] = evaluate_task(ctx, task)
            if "failed" in results[key]:
                say(f"eval {key}: FAILED ({results[key]['failed']})")
            else:
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in results[key]["metrics"].items()
                         if "_ci95_" not in k and isinstance(v, (int, float))}
                say(f"eval {key}: {shown}")
    summary = {t: {k: r[k] for k in ("task", "path", "metrics", "n", "decoding", "seed", "split", "failed") if k in r}
               for t, r in results.items()}
    atomic_write_text(cfg.out / RESULTS_FILE, json.dumps(summary, indent=1, default=str))
    return results
