"""Grow a base tokenizer with a vocabulary layout profile and print the id ranges.

Examples:
  anygpt vocab --base path/to/llama2 --profile anygpt --out grown/
  anygpt vocab --base sp.model --profile default --sizes image=512,speech=1024,music=0 --out grown/
  anygpt vocab --base grown/            # print the layout of an already grown tokenizer
  anygpt vocab --base models/anygpt/chat --out grown/   # a released AnyGPT directory: detected layout
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anygpt.vocab import LAYOUT_FILE, PROFILES, VocabLayout, load_base_tokenizer

HELP = "grow a base tokenizer with a layout profile (e.g. anygpt) and print the id ranges"


def parse_sizes(text: str | None) -> dict[str, int] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, sep, val = part.partition("=")
        if not sep or not val.strip().isdigit():
            raise ValueError(f"--sizes expects modality=N[,modality=N], got {part!r}")
        out[name.strip()] = int(val)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="tokenizer directory, sentencepiece .model file, or hub id")
    p.add_argument("--profile", choices=sorted(PROFILES), help="layout profile to add (omit to inspect a grown tokenizer)")
    p.add_argument("--sizes", help="per-modality code counts, e.g. image=512,speech=1024,music=0 (default: the reference's)")
    p.add_argument("--pad-to", type=int, default=64, help="pad the embedding rows to a multiple of this (default 64)")
    p.add_argument("--out", help="directory to write the grown tokenizer and anygpt_layout.json")


def run(args: argparse.Namespace) -> int:
    from anygpt.data.reference_text import carry_reference_text_files

    tok = load_base_tokenizer(args.base)
    if args.profile is None:
        # an already grown tokenizer: ours (anygpt_layout.json) or a released AnyGPT directory,
        # recognised from its tokens; with --out it is written as a grown tokenizer directory
        base = Path(args.base)
        if base.is_dir() and (base / LAYOUT_FILE).exists():
            layout = VocabLayout.load(base)
        else:
            layout = VocabLayout.detect(tok)
            if layout is None:
                raise ValueError(f"{args.base}: no {LAYOUT_FILE} and not a released AnyGPT tokenizer; "
                                 "pass --profile to grow it")
        if len(tok) != layout.vocab_size:
            raise ValueError(f"{args.base}: tokenizer has {len(tok)} entries, the {layout.profile} layout {layout.vocab_size}")
    else:
        layout = VocabLayout.from_profile(args.profile, len(tok), parse_sizes(args.sizes), args.pad_to)
        layout.grow_tokenizer(tok)
    print(layout.describe())
    if args.out:
        tok.save_pretrained(args.out)
        carry_reference_text_files(args.base, args.out)
        layout.save(args.out)
        print(f"wrote {args.out} ({len(tok)} tokens; model embeddings pad to {layout.padded_vocab_size})")
    return 0
