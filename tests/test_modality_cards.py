"""Tokenizer cards in tokenizers/, the fit-tokenizer command and HF-dataset manifests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from modality_fixtures import write_images, write_manifest  # noqa: E402

from anygpt.modality.base import backend_names, load_card, load_tokenizer  # noqa: E402
from anygpt.jobs.tokenize_media import tokenize_manifest  # noqa: E402

CARDS = sorted((Path(__file__).resolve().parents[1] / "tokenizers").glob("*.yaml"))


def test_every_shipped_card_names_a_known_backend():
    assert {c.stem for c in CARDS} >= {"speechtokenizer", "encodec_32khz", "encodec_24khz", "janus-vq",
                                       "demo-image", "demo-speech", "demo-music"}
    for path in CARDS:
        card = load_card(path)
        assert card.backend in backend_names(), path
        assert card.modality in ("image", "speech", "music"), path


def test_real_card_without_weights_fails_clearly(tmp_path):
    card = (Path(__file__).resolve().parents[1] / "tokenizers" / "janus-vq.yaml")
    with pytest.raises(FileNotFoundError, match="janus_vqvae: checkpoint folder not found"):
        load_tokenizer(card)


def test_fit_tokenizer_cli_writes_a_card_directory(tmp_path, cli):
    paths = write_images(tmp_path / "img", 6)
    man = write_manifest(tmp_path / "m.jsonl", [{"id": str(i), "path": f"img/{p.name}"} for i, p in enumerate(paths)])
    proc = cli("fit-tokenizer", "--modality", "image", "--manifest", man, "--out", tmp_path / "tok",
               "--codebook-size", "16", "--image-size", "32", "--iters", "3", "--set", "resize_policy=center-crop")
    assert "16 codes, 16 codes/image" in proc.stdout
    tok = load_tokenizer(tmp_path / "tok")
    assert (tok.name, tok.codebook_size, tok.tokens_per_item, tok.resize_policy) == ("demo-image", 16, 16, "center-crop")
    bad = cli("fit-tokenizer", "--modality", "speech", "--manifest", man, "--out", tmp_path / "t2", "--patch-size", "4", check=False)
    assert bad.returncode == 2 and "for images only" in bad.stderr


def test_hf_dataset_manifest(tmp_path):
    import datasets

    from anygpt.modality.kmeans_tokenizer import KMeansImageTokenizer

    paths = write_images(tmp_path / "img", 3)
    tok = KMeansImageTokenizer.fit([str(p) for p in paths], tmp_path / "tok", codebook_size=8, iters=2)
    ds = datasets.Dataset.from_dict({"path": [str(p) for p in paths], "text": ["a", "b", "c"]})
    ds.save_to_disk(str(tmp_path / "ds"))
    res = tokenize_manifest(tmp_path / "tok", tmp_path / "out", hf_dataset=tmp_path / "ds", progress=False)
    assert res.items == 3 and res.errors == 0
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp_path / "out" / "shard-00000.parquet").to_pylist()
    assert [r["id"] for r in rows] == ["0", "1", "2"] and [r["text"] for r in rows] == ["a", "b", "c"]
    from anygpt.modality.media import load_image

    assert rows[0]["codes"] == tok.encode([load_image(paths[0], 64)])[0].tolist()
    summary = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert summary["fingerprint"] == tok.fingerprint
