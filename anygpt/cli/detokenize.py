"""Codes → media files (png for images, wav for audio), from code shards or a token string.

Malformed spans (unclosed, wrong length, out-of-range codes) give a warning and the best valid
output, never a crash. File names come from the item id (made safe), never from prompt text.

Examples:
  anygpt detokenize --tokenizer tok/image --shards codes/img --out media/
  anygpt detokenize --tokenizer image=tok/image,speech=tok/speech --text reply.txt --out media/
  anygpt detokenize --tokenizer tok/image --text "<soim><👀1><👀2>...<eoim>" --out media/ --layout model_dir/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anygpt.vocab import MODALITIES

HELP = "code shards or a token string -> media files (png / wav)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True,
                   help="a card (YAML or directory), or modality=CARD[,modality=CARD] for several modalities")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", help="a directory of shard-*.parquet (or one .parquet file)")
    src.add_argument("--text", help="a token string, or a file holding one (e.g. a model reply)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--layout", help="directory or file with anygpt_layout.json (default: anygpt profile, card sizes)")
    p.add_argument("--limit", type=int, help="shards: decode at most this many rows")
    p.add_argument("--device", help="cpu, cuda ... (default: cuda when available)")


def load_tokenizers(spec: str, device: str | None = None) -> dict:
    """``CARD`` or ``modality=CARD,...`` → {modality: tokenizer}."""
    from anygpt.modality.base import load_tokenizer

    out = {}
    for part in spec.split(","):
        name, sep, card = part.partition("=")
        if sep and name.strip() in MODALITIES and not Path(part).exists():
            tok = load_tokenizer(card.strip(), device)
            if tok.modality != name.strip():
                raise ValueError(f"{card}: a {tok.modality} tokenizer given for {name}")
        else:
            tok = load_tokenizer(part.strip(), device)
        out[tok.modality] = tok
    return out


def run(args: argparse.Namespace) -> int:
    from anygpt.jobs.detokenize_media import detokenize_shards, detokenize_text

    tokenizers = load_tokenizers(args.tokenizer, args.device)
    if args.shards:
        items = detokenize_shards(tokenizers, args.shards, args.out, limit=args.limit)
    else:
        text = args.text
        p = Path(text)
        if len(text) < 4096 and "<" not in text and p.is_file():
            text = p.read_text(encoding="utf-8")
        layout = None
        if args.layout:
            from anygpt.vocab import VocabLayout

            layout = VocabLayout.load(args.layout)
        items = detokenize_text(tokenizers, text, args.out, layout=layout)
    written = sum(1 for i in items if i.path)
    print(f"wrote {written} file(s) to {args.out} ({len(items) - written} not decoded); index: {args.out}/detokenized.jsonl")
    return 0
