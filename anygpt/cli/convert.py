"""Convert a model directory, e.g. a released AnyGPT checkpoint, into a bundle that chat, serve,
eval and training load: sharded safetensors plus the tokenizer, vocabulary layout and template.

A released directory (``fnlp/AnyGPT-base`` / ``fnlp/AnyGPT-chat``: one fp32 ``pytorch_model.bin``,
``added_tokens.json``, a slow LLaMA tokenizer) is recognised from its tokenizer; its weights are
read with ``weights_only=True``. Modality tokenizer cards can be attached with ``--card``.

Examples:
  anygpt convert --model AnyGPT-chat/ --out anygpt-chat-bf16/
  anygpt convert --model AnyGPT-base/ --out anygpt-base/ --dtype fp32 --max-shard-size 5GB \\
      --card image=tokenizers/seed2.yaml --card speech=tokenizers/speechtokenizer_soundstorm.yaml
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

HELP = "convert a model directory (e.g. released AnyGPT) to a bundle with sharded bf16 safetensors"

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def parse_cards(items: list[str]) -> dict[str, Path]:
    """``["image=path", ...]`` → ``{"image": Path("path")}``; each card must exist."""
    from anygpt.vocab import MODALITIES

    cards: dict[str, Path] = {}
    for item in items:
        modality, sep, path = item.partition("=")
        if not sep or modality not in MODALITIES:
            raise ValueError(f"--card expects MODALITY=PATH with MODALITY one of {', '.join(MODALITIES)}, got {item!r}")
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such tokenizer card")
        cards[modality] = Path(path)
    return cards


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="source model directory (ours or a released AnyGPT one)")
    p.add_argument("--out", required=True, help="bundle directory to write (must not exist, or be empty)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weight dtype to write (default bf16)")
    p.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard (default 2GB)")
    p.add_argument("--card", action="append", default=[], metavar="MODALITY=PATH",
                   help="attach a modality tokenizer card (YAML file or card directory); repeatable")
    p.add_argument("--template", help="template name to record (default: the one detected for the model)")


def convert(model_dir: str | Path, out_dir: str | Path, dtype: str = "bf16", max_shard_size: str = "2GB",
            cards: dict[str, Path] | None = None, template: str | None = None) -> Path:
    """Write ``model_dir`` as a bundle at ``out_dir`` (built in a temp folder, renamed at the end)."""
    import torch

    from anygpt.data.templates import get_template
    from anygpt.model.bundle import CARDS_DIR, load_bundle, save_bundle_extras

    src, out = Path(model_dir), Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: output directory exists and is not empty")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(sorted(DTYPES))}")
    bundle = load_bundle(src, dtype=getattr(torch, DTYPES[dtype]), with_tokenizers=False)
    all_cards: dict[str, Path] = {}
    if (src / CARDS_DIR).is_dir():  # cards already in the source travel with it
        all_cards.update({d.name: d for d in (src / CARDS_DIR).iterdir() if d.is_dir()})
    all_cards.update(cards or {})
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        bundle.model.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=max_shard_size)
        save_bundle_extras(tmp, bundle.tokenizer, bundle.layout, get_template(template) if template else bundle.template,
                           cards=all_cards, generation=bundle.generation or None)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def run(args: argparse.Namespace) -> int:
    out = convert(args.model, args.out, args.dtype, args.max_shard_size, parse_cards(args.card), args.template)
    from anygpt.model.bundle import TEMPLATE_FILE
    from anygpt.vocab import VocabLayout

    import json

    layout = VocabLayout.load(out)
    template = json.loads((out / TEMPLATE_FILE).read_text())["name"]
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    print(f"wrote {out}: {len(shards)} safetensors shard(s), dtype {args.dtype}, layout {layout.profile} "
          f"({layout.vocab_size} tokens), template {template}")
    return 0
