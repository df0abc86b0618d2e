"""Evaluate a model bundle on held-out data: one JSON per task, results.json and plots.

Tasks: image_to_text, text_to_image, asr, tts, music_to_text, text_to_music (default: all).
The data directory holds per-modality manifests (``<modality>/test.jsonl`` or the other layouts
anygpt.eval.evalset lists) with lines ``{"id", "path", "text", "attributes"}`` (docs/eval-manifests.md):
``text`` is the reference caption / transcript / request; ``attributes`` is optional and only the
demo corpus's keys are scored (image ``colour`` + ``shape``, music ``instrument`` + ``tempo``, the
music analyser fitted on ``music/train.jsonl``). A metric with nothing to compare is listed under
``not_scored`` with the reason, never given a number. Without attributes, text→image and
text→music are scored by the model's own read-back (and CLIP / CLAP when given local models).

Examples:
  anygpt eval --model runs/demo/model --data runs/demo/corpus --out runs/demo/eval
  anygpt eval --model M --data D --out E --tasks asr,tts --limit 50 --seed 1
  anygpt eval --model M --data D --out E --tasks text_to_image --preset sample --clip-model ~/models/clip
  anygpt eval --model M --data D --out E --tasks tts --asr-model ~/models/whisper-tiny
  anygpt eval --model M --data D --out E --tasks text_to_music --clap-model ~/models/clap-htsat-unfused
  anygpt eval --model M --data D --out E --report E/report --train-log pretrain=run1/metrics.jsonl --train-log sft=run2/metrics.jsonl
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from anygpt.cli import CLIError
from anygpt.eval.generation import preset_names
from anygpt.eval.harness import TASK_NAMES, EvalConfig, parse_tasks, run_eval

HELP = "metrics on a held-out set, written as JSON plus plots"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model bundle directory")
    p.add_argument("--data", required=True, help="corpus directory with per-modality held-out manifests")
    p.add_argument("--out", required=True, help="output directory for <task>.json, results.json and plots")
    p.add_argument("--tasks", default=",".join(TASK_NAMES), help=f"comma-separated tasks (default: all of {','.join(TASK_NAMES)})")
    p.add_argument("--limit", type=int, help="evaluate at most N held-out items per task")
    p.add_argument("--preset", default="default", choices=preset_names(),
                   help="decoding preset: default (text/speech greedy, image/music sampled at T=1), greedy, sample, "
                        "bundle (the model's exported settings over default), or a chat preset (demo, reference)")
    p.add_argument("--seed", type=int, default=0, help="seed for instruction phrasing and sampling (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (default 8)")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest for tiny models on a busy machine)")
    p.add_argument("--report", type=Path, metavar="DIR", help="also render report.md, report.html and metrics.json into DIR")
    p.add_argument("--train-log", action="append", default=[], metavar="[STAGE=]PATH",
                   help="training metrics.jsonl for the report's loss curves (repeat per stage)")
    p.add_argument("--asr-model", type=Path, help="local transformers ASR model dir (e.g. Whisper) to score TTS as well")
    p.add_argument("--clip-model", type=Path, help="local CLIP model dir to add a CLIP score to text_to_image")
    p.add_argument("--clap-model", type=Path, help="local CLAP model dir to add a CLAP score to text_to_music")


def run(args: argparse.Namespace) -> int:
    tasks = parse_tasks(args.tasks)
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"{args.data}: --data must be a directory")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    for flag, path in (("--asr-model", args.asr_model), ("--clip-model", args.clip_model), ("--clap-model", args.clap_model)):
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"{path}: {flag} must be a local model directory (nothing is downloaded)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = EvalConfig(data=Path(args.data), out=Path(args.out), tasks=tasks, limit=args.limit, preset=args.preset,
                     seed=args.seed, batch_size=args.batch_size, asr_model=args.asr_model, clip_model=args.clip_model,
                     clap_model=args.clap_model)
    t0 = time.time()
    results = run_eval(cfg, model_dir=args.model)
    seconds = round(time.time() - t0, 1)
    print(f"wrote {Path(args.out) / 'results.json'}")
    if args.report:
        from anygpt.eval.report import write_report

        logs = dict(_stage_log(v, i) for i, v in enumerate(args.train_log))
        written = write_report(args.report, args.out, train_log=logs or None,
                               run_info={"model": str(args.model), "data": str(args.data), "seed": args.seed, "preset": args.preset,
                                         "eval seconds": seconds})
        print(f"wrote {written['html']}")
    failed = {t: r["failed"] for t, r in results.items() if "failed" in r}
    if failed:
        raise CLIError("task(s) failed: " + "; ".join(f"{t}: {why}" for t, why in failed.items()))
    return 0


def _stage_log(text: str, index: int) -> tuple[str, Path]:
    """``pretrain=path`` → ("pretrain", path); a bare path is stage ``run<index>``."""
    stage, sep, path = text.partition("=")
    if not sep:
        return f"run{index + 1}", Path(text)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: --train-log file not found")
    return stage, Path(path)
