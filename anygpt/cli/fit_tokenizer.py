"""Fit a `demo` tokenizer (k-means codebook) on a media manifest and write its card directory.

The result is a directory with ``card.yaml`` + ``codebook.safetensors`` that ``anygpt tokenize
--tokenizer DIR`` and every other command accept. Demo-grade: small, fast, recognisable decode.

Examples:
  anygpt fit-tokenizer --modality image --manifest images.jsonl --out tok/image --codebook-size 512
  anygpt fit-tokenizer --modality speech --manifest speech.jsonl --out tok/speech --frames-per-second 25
  anygpt fit-tokenizer --modality music --manifest music.jsonl --out tok/music --set n_mels=64
"""

from __future__ import annotations

import argparse

from anygpt.config import parse_assignments

from anygpt.vocab import MODALITIES

HELP = "fit a demo tokenizer (k-means codebook) on a manifest and write its card directory"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--modality", required=True, choices=MODALITIES)
    p.add_argument("--manifest", required=True, help='JSONL with {"path": ...} per line (paths relative to the file)')
    p.add_argument("--out", required=True, help="directory to write card.yaml + codebook.safetensors")
    p.add_argument("--codebook-size", type=int, help="codes the LLM sees (default: image 512, speech 1024, music 512)")
    p.add_argument("--image-size", type=int, help="image: side in pixels (default 64)")
    p.add_argument("--patch-size", type=int, help="image: patch side in pixels (default 8 → 64 codes per image)")
    p.add_argument("--frames-per-second", type=int, help="audio: codes per second (default 25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iters", type=int, default=20, help="k-means iterations (default 20)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="other settings, e.g. n_mels=64 or resize_policy=center-crop (YAML values)")


def run(args: argparse.Namespace) -> int:
    from anygpt.modality.kmeans_tokenizer import kmeans_tokenizer_class

    cls = kmeans_tokenizer_class(args.modality)
    settings = parse_assignments(args.set, "--set")
    for key in ("codebook_size", "image_size", "patch_size", "frames_per_second"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.modality == "image":
        settings.pop("frames_per_second", None)
    else:
        for key in ("image_size", "patch_size"):
            if key in settings:
                raise ValueError(f"--{key.replace('_', '-')} is for images only")
    tok = cls.fit(args.manifest, args.out, seed=args.seed, iters=args.iters, **settings)
    rate = f"{tok.tokens_per_item} codes/image" if args.modality == "image" else f"{tok.frames_per_second} codes/s"
    print(f"wrote {args.out}/card.yaml: {tok.name}, {tok.codebook_size} codes, {rate}, fingerprint {tok.fingerprint}")
    return 0
