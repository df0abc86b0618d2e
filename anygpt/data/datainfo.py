"""``anygpt_data.json``: what a built training set was made with, written beside the dataset.

The one place that writes, reads and checks it. ``build-data`` writes :func:`data_info`:
``{"layout": VocabLayout.to_dict(), "tokenizer_fingerprints": {modality: fingerprint},
"template": "chat@1", …}`` plus how the set was built (stage, sources, counts). Training
(:func:`check_datasets`) refuses a dataset whose layout differs from the model's (its ids would
mean other tokens) and datasets whose modality tokenizers disagree with each other; a folder
without the file is trained on with a warning (sets made by other tools).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from anygpt.data.templates import Template
from anygpt.data.tokenizer import text_tokenizer_fingerprint
from anygpt.utils import atomic_write_text
from anygpt.vocab import VocabLayout

DATA_INFO_FILE = "anygpt_data.json"
log = logging.getLogger(__name__)


def data_info(stage: str, tokenizer, layout: VocabLayout, template: Template, fingerprints: dict[str, str | None],
              **extra: Any) -> dict:
    """The ``anygpt_data.json`` record (the fields training checks: ``layout``,
    ``tokenizer_fingerprints``, ``template`` id) plus how the set was built."""
    return {"layout": layout.to_dict(), "tokenizer_fingerprints": {m: f for m, f in fingerprints.items() if f},
            "template": template.id, "template_config": template.to_dict(), "stage": stage,
            "text_tokenizer": text_tokenizer_fingerprint(tokenizer), **extra}


def write_data_info(dataset_dir: str | os.PathLike, info: dict) -> Path:
    """Write ``info`` (a :func:`data_info` record) as the dataset's ``anygpt_data.json``."""
    path = Path(dataset_dir) / DATA_INFO_FILE
    atomic_write_text(path, json.dumps(info, indent=1, ensure_ascii=False))
    return path


def read_data_info(dataset_dir: str | os.PathLike) -> dict:
    """The record of a built set; a folder without one is not a training set of ours."""
    path = Path(dataset_dir) / DATA_INFO_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not a training set built by `anygpt build-data`") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg})") from None


def check_datasets(dataset_dirs: list[str], layout: VocabLayout) -> dict:
    """Refuse datasets built for another layout or with conflicting tokenizer fingerprints.

    Returns the merged ``{"tokenizer_fingerprints": …, "template": …}`` of the datasets that have
    info, plus ``"cards"`` (modality → tokenizer card path) where the data recorded the cards that
    made its codes (the export carries them, so chat and eval can decode)."""
    want = layout.to_dict()
    fingerprints: dict[str, tuple[str, str]] = {}
    cards: dict[str, str] = {}
    template = None
    for d in dataset_dirs:
        if not (Path(d) / DATA_INFO_FILE).exists():
            log.warning("%s: no %s; cannot check that its token ids match the model's layout", d, DATA_INFO_FILE)
            continue
        info = read_data_info(d)
        got = info.get("layout") or {}
        for key in ("profile", "base_vocab_size", "vocab_size", "ranges"):
            if key in got and got[key] != want[key]:
                raise ValueError(f"{Path(d) / DATA_INFO_FILE}: built for layout {key}={got[key]}, the model has {want[key]}")
        for modality, fp in (info.get("tokenizer_fingerprints") or {}).items():
            if modality in fingerprints and fingerprints[modality][0] != fp:
                raise ValueError(f"{d}: {modality} tokenizer fingerprint {fp} differs from {fingerprints[modality][0]} in {fingerprints[modality][1]}")
            fingerprints[modality] = (fp, d)
        template = template or info.get("template")
        for modality, card in (info.get("cards") or {}).items():
            cards.setdefault(modality, card)
    out = {"tokenizer_fingerprints": {m: v[0] for m, v in fingerprints.items()}, "template": template}
    if cards:
        out["cards"] = cards
    return out


TRAIN_INFO_FILE = "anygpt_train.json"


def check_against_model(model_dir: str | os.PathLike, merged: dict) -> None:
    """Refuse data tokenized with other modality tokenizers than the data ``model_dir`` was
    trained on (recorded in its ``anygpt_train.json`` by the export); silent when unrecorded."""
    path = Path(model_dir) / TRAIN_INFO_FILE
    if not path.exists():
        return
    recorded = json.loads(path.read_text()).get("tokenizer_fingerprints") or {}
    for modality, fp in merged.get("tokenizer_fingerprints", {}).items():
        if modality in recorded and recorded[modality] != fp:
            raise ValueError(f"{path}: the model was trained on {modality} codes of tokenizer {recorded[modality]}, "
                             f"this data uses {fp}")


def summary_lines(info: dict) -> list[str]:
    """What a user should know about a built set beyond its size: items used more than once
    (a recipe asking for more samples than the sources hold) and text the tokenizer could not
    represent. One line each; empty when there is nothing to say."""
    lines = []
    per = info.get("sources") or {}
    for name, cov in (info.get("text_coverage") or {}).items():
        items, samples = cov.get("items") or 0, (per.get(name) or {}).get("samples", 0)
        if items and samples > items:
            lines.append(f"note: source {name}: {items} items made {samples} samples (each item used about "
                         f"{samples / items:.1f} times); lower the recipe's num_samples / num_tokens or add data if that is not meant")
        if cov.get("unknown_tokens") or cov.get("lost_chars"):
            lines.append(f"warning: source {name}: {cov['texts_with_unknown']} of {cov['texts']} texts checked have text the "
                         f"tokenizer cannot represent ({cov['unknown_tokens']} unknown pieces, {cov['lost_chars']} of "
                         f"{cov['chars']} characters lost); use a base tokenizer with byte fallback (sentencepiece "
                         f"byte_fallback=true) or one trained on this text")
    return lines
