"""The embedded default, end to end and offline: build a corpus, fit tokenizers, train a tiny
any-to-any model with DeepSpeed on two CPU processes, evaluate it and write a report.

Examples:
  anygpt demo                        # within 20 minutes on 2 CPU cores, into runs/demo
  anygpt demo --quick --out /tmp/q   # every stage in a few minutes (a smoke run; numbers meaningless)
  anygpt demo --minutes 40           # another time budget: the first steps' speed sizes the training
A killed run resumes where it stopped when started again with the same --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "the embedded default: corpus, tokenizers, DeepSpeed training, evaluation and report, offline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: every stage in a few minutes (for CI)")
    p.add_argument("--minutes", type=float, help="time budget of the whole run (default 20; --quick: none): the "
                   "training steps are sized from the speed of the first ones; 0 trains the configured steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nproc", type=int, default=2, help="DeepSpeed ranks (CPU processes), default 2")


def run(args: argparse.Namespace) -> int:
    from anygpt.demo import DemoConfig, run_demo

    cfg = DemoConfig.quick(args.out, args.seed) if args.quick else DemoConfig(out=args.out, seed=args.seed)
    if args.minutes is not None:
        cfg.minutes = args.minutes or None
    cfg.nproc = args.nproc
    run_demo(cfg)
    return 0
