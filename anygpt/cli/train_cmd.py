"""Train (stage pretrain or sft) with DeepSpeed from a recipe YAML plus key=value overrides.

Examples:
  anygpt train --config train/tiny.yaml                              # one CPU process, no launcher
  anygpt train --config train/tiny.yaml steps=20 deepspeed.zero_stage=3 out_dir=runs/z3
  torchrun --nproc_per_node 2 -m anygpt.cli train --config train/tiny.yaml
  deepspeed --num_gpus 8 --module anygpt.cli train --config train/pretrain_7b.yaml
  anygpt train --config train/sft_7b.yaml init_from=runs/pretrain_7b/export

Writes OUT_DIR/config.yaml (resolved), metrics.jsonl, tensorboard/, loss.png, checkpoints/ and
export/ (a model bundle that `anygpt chat` loads). `checkpoint.resume=auto` (default) continues
from the newest complete checkpoint in OUT_DIR.
"""

from __future__ import annotations

import argparse

HELP = "train stage pretrain or sft under DeepSpeed (deepspeed, torchrun or one plain process)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="recipe YAML (e.g. train/tiny.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override recipe keys, e.g. optim.lr=1e-4 steps=50")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    import yaml

    from anygpt.train.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    from anygpt.train.distributed import shutdown
    from anygpt.train.loop import run as train

    train(cfg)
    shutdown()
    return 0
