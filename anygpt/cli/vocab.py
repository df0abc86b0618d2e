"""Grow a base tokenizer with a vocabulary layout profile and print the id ranges.

Examples:
  anygpt vocab --base path/to/llama2 --profile anygpt --out grown/
  anygpt vocab --base sp.model --profile default --sizes image=512,speech=1024,music=0 --out grown/
  anygpt vocab --base sp.model --profile default --cards tokenizers/demo-image.yaml,tokenizers/demo-speech.yaml --out grown/

With --cards the code counts come from the cards (a --sizes entry that disagrees is an error);
text the base tokenizer cannot represent becomes its unknown piece (see anygpt.vocab.sentencepiece_tokenizer).
  anygpt vocab --base grown/            # print the layout of an already grown tokenizer
  anygpt vocab --base models/anygpt/chat --out grown/   # a released AnyGPT directory: detected layout
"""

from __future__ import annotations

import argparse

from anygpt.vocab import PROFILES, VocabLayout, load_base_tokenizer

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


def card_codebook_size(path: str) -> tuple[str, int]:
    """``(modality, codes the LLM sees)`` of a card: its ``codebook_size`` setting, else the
    loaded tokenizer's."""
    from anygpt.modality.base import load_card, load_tokenizer

    card = load_card(path.strip())
    n = card.settings.get("codebook_size")
    if n is None:
        n = load_tokenizer(path.strip()).codebook_size
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{path}: codebook_size must be a positive integer, got {n!r}")
    return card.modality, n


def sizes_from_cards(cards: list[str], sizes: dict[str, int] | None) -> dict[str, int]:
    """Code counts per modality from the cards; a ``--sizes`` entry must agree with its card (a
    layout smaller than the codebook cannot hold every code, a larger one wastes rows the model
    never sees trained)."""
    out = dict(sizes or {})
    for path in cards:
        modality, n = card_codebook_size(path)
        given = (sizes or {}).get(modality)
        if given is not None and given != n:
            raise ValueError(f"--sizes {modality}={given} but {path.strip()} has {n} codes: drop {modality} from --sizes or use {modality}={n}")
        out[modality] = n
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, help="tokenizer directory, sentencepiece .model file, or hub id")
    p.add_argument("--profile", choices=sorted(PROFILES), help="layout profile to add (omit to inspect a grown tokenizer)")
    p.add_argument("--sizes", help="per-modality code counts, e.g. image=512,speech=1024,music=0 (default: the reference's)")
    p.add_argument("--cards", help="comma-separated tokenizer cards (YAML or card folders): code counts are taken from / checked against them")
    p.add_argument("--pad-to", type=int, default=64, help="pad the embedding rows to a multiple of this (default 64)")
    p.add_argument("--out", help="directory to write the grown tokenizer and anygpt_layout.json")


def run(args: argparse.Namespace) -> int:
    from anygpt.data.reference_text import carry_reference_text_files

    if args.profile is None:
        # an already grown tokenizer: ours (anygpt_layout.json) or a released AnyGPT directory,
        # recognised from its tokens; with --out it is written as a grown tokenizer directory
        from anygpt.data.tokenizer import load_grown_tokenizer

        tok, layout = load_grown_tokenizer(args.base)
    else:
        tok = load_base_tokenizer(args.base)
        sizes = parse_sizes(args.sizes)
        if args.cards:
            sizes = sizes_from_cards([c for c in args.cards.split(",") if c.strip()], sizes)
        elif sizes:
            print("note: --sizes not checked against any tokenizer card; pass --cards to check them")
        layout = VocabLayout.from_profile(args.profile, len(tok), sizes, args.pad_to)
        layout.grow_tokenizer(tok)
    print(layout.describe())
    if args.out:
        tok.save_pretrained(args.out)
        carry_reference_text_files(args.base, args.out)
        layout.save(args.out)
        print(f"wrote {args.out} ({len(tok)} tokens; model embeddings pad to {layout.padded_vocab_size})")
    return 0
