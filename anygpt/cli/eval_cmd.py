"""Evaluate a model bundle on held-out data: one JSON per task, results.json and plots.

Tasks: image_to_text, text_to_image, asr, tts, music_to_text, text_to_music, multi_turn (default: all).
Each task runs on the evaluation's own prompt (the harness) and through the chat session a user
talks to (`anygpt chat`'s template and default preset, the item's file attached to a natural
question, one fresh session per item), reported side by side (--path both, the default);
multi_turn runs scripted multi-turn chat sessions (chat path only).
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
  anygpt eval --model M --data D --out E --tasks image_to_text,multi_turn --path chat --chat-preset default
  anygpt eval --model M --data D --out E --tasks text_to_image --preset sample --clip-model ~/models/clip
  anygpt eval --model M --data D --out E --tasks tts --asr-model ~/models/whisper-tiny
  anygpt eval --model M --data D --out E --tasks text_to_music --clap-model ~/models/clap-htsat-unfused
  anygpt eval --model M --data D --out E --report E/report --train-log pretrain=run1/metrics.jsonl --train-log sft=run2/metrics.jsonl

The paper's benchmarks (--benchmark; --data is then the data set's own folder in its published
layout, see docs/evaluation.md; decoding follows the paper unless --decoding overrides it; a
killed run resumes where it stopped when rerun with the same --out):
  anygpt eval --benchmark coco-caption --model M --data ~/data/coco --out E
  anygpt eval --benchmark coco-t2i --model M --data ~/data/coco --out E --subset 30000 --models-dir ~/models
  anygpt eval --benchmark librispeech-asr --model M --data ~/data/LibriSpeech --out E --limit 200
  anygpt eval --benchmark vctk-tts --model M --data ~/data/VCTK-Corpus-0.92 --out E --whisper-model ~/models/whisper-medium
  anygpt eval --benchmark musiccaps-t2m --model M --data ~/data/musiccaps --out E --decoding music.top_k=200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from anygpt.cli import CLIError
from anygpt.eval.generation import preset_names
from anygpt.eval.harness import PATHS, TASK_NAMES, EvalConfig, parse_tasks, run_eval
from anygpt.inference.settings import PRESETS

HELP = "metrics on a held-out set, written as JSON plus plots"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="exported model bundle directory")
    p.add_argument("--data", required=True, help="corpus directory with per-modality held-out manifests")
    p.add_argument("--out", required=True, help="output directory for <task>.json, results.json and plots")
    p.add_argument("--tasks", default=",".join(TASK_NAMES), help=f"comma-separated tasks (default: all of {','.join(TASK_NAMES)})")
    p.add_argument("--limit", type=int, help="evaluate at most N held-out items per task")
    p.add_argument("--preset", default="default", choices=preset_names(),
                   help="decoding preset (anygpt/inference/settings.py): default (text 3 beams, images best of 8 "
                        "sampled, music sampled, speech greedy), greedy, sample, demo, reference, paper, or bundle "
                        "(the model's exported settings over default)")
    p.add_argument("--path", default="both", choices=PATHS,
                   help="how items are asked: harness (the evaluation's own prompt, output modality forced, batched), "
                        "chat (the session `anygpt chat` runs: its template and default preset, the file attached to "
                        "a natural question, one fresh session per item, output not forced) or both (default; "
                        "the report shows both columns)")
    p.add_argument("--chat-preset", default=None, choices=sorted(PRESETS),
                   help="the chat path's preset (default: the one `anygpt chat` uses for this model)")
    p.add_argument("--sessions", type=int, default=30,
                   help="multi_turn: scripted chat sessions over held-out pictures (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed for instruction phrasing and sampling (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (default 8)")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest for tiny models on a busy machine)")
    p.add_argument("--report", type=Path, metavar="DIR", help="also render report.md, report.html and metrics.json into DIR")
    p.add_argument("--train-log", action="append", default=[], metavar="[STAGE=]PATH",
                   help="training metrics.jsonl for the report's loss curves (repeat per stage)")
    p.add_argument("--asr-model", type=Path, help="local transformers ASR model dir (e.g. Whisper) to score TTS as well")
    p.add_argument("--clip-model", type=Path, help="local CLIP model dir to add a CLIP score to text_to_image "
                   "(with --benchmark coco-t2i: the judge CLIP, default MODELS_DIR/clip-vit-large-patch14)")
    p.add_argument("--clap-model", type=Path, help="local CLAP model dir to add a CLAP score to text_to_music "
                   "(with --benchmark musiccaps-*: the judge CLAP, default MODELS_DIR/larger_clap_music)")
    from anygpt.eval.benchmarks import BENCHMARKS

    b = p.add_argument_group("paper benchmarks")
    b.add_argument("--benchmark", choices=list(BENCHMARKS), help="run one of the paper's benchmarks on --data in its published layout")
    b.add_argument("--subset", type=int, help="coco-t2i: size of the fixed random caption subset (default 30000, the paper's)")
    b.add_argument("--decoding", action="append", default=[], metavar="MODALITY.SETTING=VALUE",
                   help="override one of the paper's decoding settings, e.g. text.num_beams=3 (repeatable)")
    b.add_argument("--models-dir", type=Path, default=Path("models"),
                   help="folder holding the judge models under their hub names (default ./models)")
    b.add_argument("--whisper-model", type=Path, help="local Whisper dir (vctk-tts WER; default MODELS_DIR/whisper-medium)")
    b.add_argument("--wavlm-model", type=Path, help="local WavLMForXVector dir (vctk-tts speaker similarity; default MODELS_DIR/wavlm-base-plus-sv)")
    b.add_argument("--device", help="device for the model and the judge models (default: cuda when available, else cpu)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    if args.benchmark:
        return _run_benchmark(args)
    tasks = parse_tasks(args.tasks)
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"{args.data}: --data must be a directory")
    for flag in ("limit", "sessions"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1")
    for flag, path in (("--asr-model", args.asr_model), ("--clip-model", args.clip_model), ("--clap-model", args.clap_model)):
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"{path}: {flag} must be a local model directory (nothing is downloaded)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = EvalConfig(data=Path(args.data), out=Path(args.out), tasks=tasks, limit=args.limit, preset=args.preset,
                     seed=args.seed, batch_size=args.batch_size, asr_model=args.asr_model, clip_model=args.clip_model,
                     clap_model=args.clap_model, path=args.path, chat_preset=args.chat_preset, sessions=args.sessions)
    t0 = time.time()
    results = run_eval(cfg, model_dir=args.model)
    seconds = round(time.time() - t0, 1)
    print(f"wrote {Path(args.out) / 'results.json'}")
    if args.report:
        from anygpt.eval.report import write_report

        logs = dict(_stage_log(v, i) for i, v in enumerate(args.train_log))
        written = write_report(args.report, args.out, train_log=logs or None,
                               run_info={"model": str(args.model), "data": str(args.data), "seed": args.seed, "preset": args.preset,
                                         "path": args.path, "eval seconds": seconds})
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


def _run_benchmark(args: argparse.Namespace) -> int:
    """``--benchmark NAME``: one of the paper's rows (anygpt.eval.benchmarks)."""
    from anygpt.eval.benchmarks.runner import BenchmarkConfig, parse_decoding, run_benchmark

    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"{args.data}: --data must be the data set's directory")
    for flag in ("limit", "subset", "batch_size"):
        v = getattr(args, flag)
        if v is not None and v < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = BenchmarkConfig(
        benchmark=args.benchmark, data=Path(args.data), out=Path(args.out), model=args.model, limit=args.limit,
        subset=args.subset, seed=args.seed, batch_size=args.batch_size, decoding=parse_decoding(args.decoding),
        models_dir=args.models_dir, progress=not args.no_progress, device=args.device,
        model_paths={"clip": args.clip_model, "whisper": args.whisper_model, "wavlm": args.wavlm_model, "clap": args.clap_model},
    )
    run_benchmark(cfg)
    print(f"wrote {Path(args.out) / (args.benchmark + '.json')}")
    if args.report:
        from anygpt.eval.benchmarks.report import write_benchmark_report

        print(f"wrote {write_benchmark_report(args.out, args.report)}")
    return 0
