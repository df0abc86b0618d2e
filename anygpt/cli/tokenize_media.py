"""Tokenize a manifest of media into Parquet code shards (sharded by rank, resumable).

The manifest is JSONL, one ``{"id", "path", "text"?}`` per line (paths relative to the manifest),
or ``--hf-dataset DIR`` (a ``save_to_disk`` dataset with ``path`` and optional ``id``/``text``
columns). It is cut into shards of ``--shard-size`` rows; under torchrun / deepspeed rank r does
the shards k with k % WORLD_SIZE == r. A rerun skips finished shards. Bad media are skipped and
listed in ``OUT/errors.jsonl``; more than ``--max-error-rate`` of them fails the job (exit 1).

Examples:
  anygpt tokenize --modality image --tokenizer tokenizers/janus-vq.yaml --manifest imgs.jsonl --out codes/img
  anygpt tokenize --modality speech --tokenizer tok/speech --manifest speech.jsonl --out codes/sp --batch-size 32
  torchrun --nproc_per_node 4 -m anygpt.cli tokenize --modality music --tokenizer tokenizers/encodec_32khz.yaml \\
      --manifest music.jsonl --out codes/music --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys

from anygpt.vocab import MODALITIES

HELP = "media manifest (JSONL / HF dataset) -> Parquet code shards, sharded by rank, resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("--tokenizer", required=True, help="tokenizer card: a YAML file or a directory with card.yaml")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help='JSONL: {"id", "path", "text"?} per line')
    src.add_argument("--hf-dataset", help="a datasets.save_to_disk directory with path/text columns")
    p.add_argument("--out", required=True, help="output directory for shard-*.parquet, errors.jsonl, manifest.json")
    p.add_argument("--batch-size", type=int, default=16, help="items per encode call (default 16)")
    p.add_argument("--max-batch-seconds", type=float, default=120.0,
                   help="audio: cap on items x longest item per batch, in seconds (default 120)")
    p.add_argument("--shard-size", type=int, default=1000, help="manifest rows per shard (default 1000)")
    p.add_argument("--max-error-rate", type=float, default=0.1,
                   help="fail (exit 1) when more than this fraction of items is bad (default 0.1)")
    p.add_argument("--max-shards", type=int, help="stop after this many new shards (rerun to continue)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available; LOCAL_RANK picks the GPU)")
    p.add_argument("--window-seconds", type=float, default=None,
                   help="audio: cut recordings longer than this into windows, one row each, id <id>@<offset> "
                        "(default: the card's window_seconds, else the longest that fits max_seconds and 4000 codes)")
    p.add_argument("--hop-seconds", type=float, help="audio: a new window every this many seconds (default: the window)")
    p.add_argument("--no-windows", action="store_true", help="audio: never cut; recordings over max_seconds are errors")
    p.add_argument("--workers", type=int, default=None,
                   help="processes decoding and resampling media while the codec encodes (default: the CPUs "
                        "this rank may use, less one, at most 8; 0: read in the main process)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def unmerged_message(res, out: str, rank: int, world: int) -> str:
    """What a process that did not write manifest.json should say. With several ranks, the others
    are usually still writing their shards and the last one to finish merges: that is not a
    reason to rerun (issue 15: a rank said "rerun" although the job completed)."""
    if world > 1:
        return (f"rank {rank}/{world}: this rank's shards are done; the last rank to finish writes {out}/manifest.json "
                f"and errors.jsonl (rerun only if no rank does)")
    missing = res.shards_total - res.shards_done - res.shards_skipped
    return f"{missing} of {res.shards_total} shard(s) not written yet (--max-shards?): rerun the same command to continue"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run(args: argparse.Namespace) -> int:
    from anygpt.jobs.tokenize_media import tokenize_manifest

    device = args.device
    if device in (None, "cuda") and "LOCAL_RANK" in os.environ and _cuda_available():
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"  # one GPU per rank, also by default
    res = tokenize_manifest(
        args.tokenizer, args.out, manifest=args.manifest, hf_dataset=args.hf_dataset, modality=args.modality,
        batch_size=args.batch_size, shard_size=args.shard_size, max_batch_seconds=args.max_batch_seconds,
        max_error_rate=args.max_error_rate, device=device, max_shards=args.max_shards,
        progress=not args.no_progress,
        window_seconds=None if args.no_windows else (args.window_seconds or "auto"), hop_seconds=args.hop_seconds,
        workers=args.workers,
    )
    print(f"tokenized {res.shards_done} shard(s), {res.shards_skipped} already done, of {res.shards_total}")
    if res.throughput():
        print(f"throughput: {res.throughput()}")
    if res.merged:
        print(f"{res.items - res.errors} items tokenized, {res.errors} skipped (errors.jsonl); "
              f"wrote {args.out}/manifest.json")
    else:
        print(unmerged_message(res, args.out, int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))))
    if res.failed:
        print(f"anygpt tokenize: error: {res.failed}", file=sys.stderr)
        return 1
    return 0
