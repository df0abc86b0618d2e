"""A model bundle: the exported directory that ``anygpt chat``, ``serve`` and ``eval`` load.

Layout of ``DIR``::

    config.json, model.safetensors      Hugging Face causal LM (save_pretrained, safetensors)
    tokenizer.json, tokenizer_config.json, …   the grown text tokenizer
    anygpt_layout.json                  VocabLayout
    anygpt_template.json                the prompt template (name, version, system message)
    anygpt_generation.json              per-output-modality generation settings
    tokenizers/<modality>/card.yaml     modality tokenizer cards (+ their weights, when copied)

A released AnyGPT checkpoint (no ``anygpt_*`` files; one fp32 ``pytorch_model.bin``, a slow LLaMA
tokenizer with ``added_tokens.json``) is recognised from its tokenizer: the ``anygpt`` layout is
detected, and the reference chat template (AnyGPT-chat) or pretraining prompt (AnyGPT-base) chosen.
``anygpt convert`` rewrites such a directory as a bundle (sharded bf16 safetensors + these files).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anygpt.data.reference_text import carry_reference_text_files
from anygpt.data.templates import Template, get_template, template_from_dict
from anygpt.modality.base import CARD_FILE, ModalityTokenizer, load_card, load_tokenizer
from anygpt.utils import atomic_write_text, refuse_remote_code
from anygpt.vocab import LAYOUT_FILE, VocabLayout

TEMPLATE_FILE = "anygpt_template.json"
GENERATION_FILE = "anygpt_generation.json"
CARDS_DIR = "tokenizers"


@dataclass
class Bundle:
    model: Any
    tokenizer: Any
    layout: VocabLayout
    template: Template
    tokenizers: dict[str, ModalityTokenizer] = field(default_factory=dict)
    generation: dict[str, dict] = field(default_factory=dict)
    path: Path | None = None


def save_bundle_extras(
    out_dir: str | os.PathLike,
    tokenizer,
    layout: VocabLayout,
    template: Template,
    cards: dict[str, str | os.PathLike] | None = None,
    generation: dict[str, dict] | None = None,
    copy_card_files: bool = True,
) -> None:
    """Everything but the weights: tokenizer, layout, template, generation settings, cards.

    A card given as a directory is copied whole (its weights travel with the bundle) when
    ``copy_card_files``; otherwise, or for a single YAML card, a ``card.yaml`` with absolute
    paths is written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    # the reference templates need the sentencepiece model and its legacy flag to render the
    # reference's ids; current transformers saves neither
    carry_reference_text_files(tokenizer.name_or_path, out)
    layout.save(out)
    atomic_write_text(out / TEMPLATE_FILE, json.dumps(template.to_dict(), indent=1))
    if generation is not None:
        atomic_write_text(out / GENERATION_FILE, json.dumps(generation, indent=1))
    for modality, src in (cards or {}).items():
        dst = out / CARDS_DIR / modality
        src = Path(src)
        if src.is_dir() and copy_card_files:
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst)
            continue
        card = load_card(src)
        settings = {}
        for k, v in card.settings.items():
            resolved = card.path(k) if isinstance(v, str) else None
            settings[k] = str(resolved.resolve()) if resolved is not None and resolved.exists() else v
        dst.mkdir(parents=True, exist_ok=True)
        type(card)(card.backend, card.modality, dst, settings).save(dst)


def default_template_name(layout: VocabLayout) -> str:
    """The template for a directory that ships none: the reference's chat format for an
    AnyGPT-chat vocabulary (``<-Res->`` present), its pretraining pair format for AnyGPT-base,
    our ``chat`` template for our own profile."""
    return {"anygpt": "anygpt-pretrain", "anygpt-chat": "anygpt-chat"}.get(layout.profile, "chat")


def load_bundle(
    path: str | os.PathLike,
    device: str = "cpu",
    dtype: Any = None,
    with_tokenizers: bool = True,
    model_cls: Any = None,
) -> Bundle:
    """Load an exported model directory (ours, or a released AnyGPT checkpoint)."""
    import torch
    from transformers import AutoModelForCausalLM

    from anygpt.vocab import load_base_tokenizer

    p = Path(path)
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"{p}: not a model directory (no config.json)")
    refuse_remote_code(p)  # before anything reads the folder: an auto_map would run its own code
    tokenizer = load_base_tokenizer(p)
    if (p / LAYOUT_FILE).exists():
        layout = VocabLayout.load(p)
    else:
        layout = VocabLayout.detect(tokenizer)
        if layout is None:
            raise ValueError(f"{p}: no {LAYOUT_FILE} and the tokenizer is not an AnyGPT one")
    if (p / TEMPLATE_FILE).exists():
        template = template_from_dict(json.loads((p / TEMPLATE_FILE).read_text()))
    else:
        template = get_template(default_template_name(layout))
    generation = json.loads((p / GENERATION_FILE).read_text()) if (p / GENERATION_FILE).exists() else {}
    cls = model_cls or AutoModelForCausalLM
    # weights_only: a released ``pytorch_model.bin`` is a pickle; never let it run code.
    model = cls.from_pretrained(str(p), dtype=dtype or torch.float32, weights_only=True,
                              trust_remote_code=False).to(device).eval()
    toks: dict[str, ModalityTokenizer] = {}
    if with_tokenizers and (p / CARDS_DIR).is_dir():
        for d in sorted((p / CARDS_DIR).iterdir()):
            if (d / CARD_FILE).exists():
                toks[d.name] = load_tokenizer(d, device=device)
    return Bundle(model, tokenizer, layout, template, toks, generation, p)
