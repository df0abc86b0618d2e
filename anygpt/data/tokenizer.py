"""The text tokenizer a build renders with, and the template that fits its layout.

A build takes the grown tokenizer (``anygpt vocab --out``, a bundle, or a released AnyGPT
directory) and a template; both are checked here before any sample is rendered, and the
tokenizer's fingerprint is what ``anygpt_data.json`` records.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from anygpt.data.templates import Template
from anygpt.vocab import LAYOUT_FILE, VocabLayout, load_base_tokenizer


def load_grown_tokenizer(directory: str | os.PathLike) -> tuple[Any, VocabLayout]:
    """The grown text tokenizer and its layout from an ``anygpt vocab --out`` directory, a bundle,
    or a released AnyGPT directory (no layout file: the layout is recognised from its tokens)."""
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"{directory}: not a tokenizer directory")
    tok = load_base_tokenizer(directory)
    if (Path(directory) / LAYOUT_FILE).exists():
        layout = VocabLayout.load(directory)
    else:
        layout = VocabLayout.detect(tok)
        if layout is None:
            raise ValueError(f"{directory}: no {LAYOUT_FILE} and not a released AnyGPT tokenizer; grow it with "
                             "`anygpt vocab --profile …`")
    if len(tok) != layout.vocab_size:
        raise ValueError(f"{directory}: tokenizer has {len(tok)} entries, its layout says {layout.vocab_size}; "
                         "regrow it with `anygpt vocab`")
    return tok, layout


def default_template(layout: VocabLayout, stage: str) -> str:
    """The template that matches a layout profile for ``stage`` (``pretrain`` or ``sft``)."""
    if layout.profile == "default":
        return "chat"
    return "anygpt-pretrain" if stage == "pretrain" else "anygpt-chat"


def check_template(template: Template, layout: VocabLayout) -> None:
    """Refuse a template whose markers the layout does not have."""
    compatible = {"anygpt": {"anygpt", "anygpt-chat"}, "anygpt-chat": {"anygpt-chat"}, "default": {"default"}}
    if layout.profile not in compatible.get(template.profile, {template.profile}):
        raise ValueError(f"template {template.id} needs a layout of profile {template.profile!r}, the tokenizer has "
                         f"{layout.profile!r}")


def text_tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the text tokenizer's vocabulary (ids and strings)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
