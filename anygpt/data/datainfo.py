"""``anygpt_data.json``: what a built training set was made with, written beside the dataset.

``{"layout": VocabLayout.to_dict(), "tokenizer_fingerprints": {modality: fingerprint},
"template": "chat@1"}``. Training refuses a dataset whose layout differs from the model's (its ids
would mean other tokens) and datasets whose modality tokenizers disagree with each other.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from anygpt.utils import atomic_write_text
from anygpt.vocab import VocabLayout

DATA_INFO_FILE = "anygpt_data.json"
log = logging.getLogger(__name__)


def write_data_info(dataset_dir: str | os.PathLike, layout: VocabLayout, tokenizer_fingerprints: dict[str, str], template_id: str) -> Path:
    """Record the layout, modality tokenizer fingerprints and template id of a built dataset."""
    path = Path(dataset_dir) / DATA_INFO_FILE
    info = {"layout": layout.to_dict(), "tokenizer_fingerprints": dict(tokenizer_fingerprints), "template": template_id}
    atomic_write_text(path, json.dumps(info, indent=1))
    return path


def read_data_info(dataset_dir: str | os.PathLike) -> dict | None:
    """The recorded info, or None (with a warning) when the dataset has none."""
    path = Path(dataset_dir) / DATA_INFO_FILE
    if not path.exists():
        log.warning("%s: no %s; cannot check that its token ids match the model's layout", dataset_dir, DATA_INFO_FILE)
        return None
    try:
        return json.loads(path.read_text())
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
        info = read_data_info(d)
        if info is None:
            continue
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
