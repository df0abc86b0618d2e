"""Security: weights we write are safetensors; every loader of third-party ``.pt``/``.th``/``.bin``
weights refuses a pickle that would run code (the payload's marker file never appears); no
``trust_remote_code``; the web demo binds 127.0.0.1 with upload limits; ids, file names and prompts
never steer where outputs are written.

(The chat and web session-folder traversal tests live in tests/test_chat.py and tests/test_web.py;
the released AnyGPT ``pytorch_model.bin`` payload test in tests/test_compat_checkpoint.py. This
module covers the other loaders and the naming functions under fuzzing.)"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path) -> Path:
    """Overwrite ``path`` with a state dict carrying the payload, and check the payload is live."""
    torch.save({"weight": torch.zeros(2), "evil": Payload(marker)}, path)
    torch.load(path, weights_only=False)  # an unsafe load runs it ...
    assert marker.exists()
    marker.unlink()  # ... so its absence below means the loader refused it
    return path


def _speechtokenizer(d: Path, marker: Path):
    from anygpt.modality.base import TokenizerCard
    from anygpt.modality.speech import SpeechTokenizerBackend
    from anygpt.modality.testing import SMALL_SPEECHTOKENIZER

    (d / "config.json").write_text(json.dumps(SMALL_SPEECHTOKENIZER))
    plant(d / "SpeechTokenizer.pt", marker)
    SpeechTokenizerBackend.from_card(TokenizerCard("speechtokenizer", "speech", d, {}))


def _encodec(d: Path, marker: Path):
    from anygpt.modality.base import TokenizerCard
    from anygpt.modality.music import ENCODEC_CHECKPOINTS, EncodecTokenizer

    plant(d / ENCODEC_CHECKPOINTS["24khz"], marker)
    EncodecTokenizer.from_card(TokenizerCard("encodec", "music", d, {"variant": "24khz"}))


def _seed2(d: Path, marker: Path):
    from anygpt.modality.seed2 import load_seed2

    load_seed2(plant(d / "seed_quantizer.pt", marker))


def _soundstorm(d: Path, marker: Path):
    from anygpt.modality.soundstorm import load_soundstorm

    load_soundstorm(plant(d / "speechtokenizer_soundstorm_mls.pt", marker))


def _weights_file(d: Path, marker: Path):
    from anygpt.weights import load_torch_file

    load_torch_file(plant(d / "pytorch_model.bin", marker))


def _hf_bin(d: Path, marker: Path):
    """A transformers folder (the encodec-hf backend) whose weights are a pickled pytorch_model.bin."""
    from anygpt.modality.base import TokenizerCard
    from anygpt.modality.music import EncodecHFTokenizer
    from anygpt.modality.testing import save_random_encodec_hf

    save_random_encodec_hf(d)
    (d / "model.safetensors").unlink()
    plant(d / "pytorch_model.bin", marker)
    EncodecHFTokenizer.from_card(TokenizerCard("encodec-hf", "music", d, {}))


LOADERS = {"speechtokenizer": _speechtokenizer, "encodec": _encodec, "seed2": _seed2, "soundstorm": _soundstorm,
           "weights.load_torch_file": _weights_file, "transformers-bin": _hf_bin}


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_pickle_payload_is_refused_by_every_third_party_loader(loader, tmp_path):
    marker = tmp_path / "payload_ran"
    d = tmp_path / "ckpt"
    d.mkdir()
    with pytest.raises(Exception) as err:
        LOADERS[loader](d, marker)
    assert not marker.exists(), f"{loader} ran the pickle payload"
    msg = f"{type(err.value).__name__}: {err.value}"
    assert re.search(r"weights_only|Unpickl|refused|unsupported global|not a state dict", msg, re.I), msg


def test_every_torch_load_in_the_package_is_weights_only():
    """A new ``torch.load`` without weights_only=True fails this test (our own resume files are the
    one listed exception: they are written by this package, never downloaded)."""
    allowed = {("anygpt/train/checkpoint.py", "anygpt_rank")}
    bad = []
    for f in sorted((REPO / "anygpt").rglob("*.py")):
        rel = str(f.relative_to(REPO))
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if "torch.load(" in line and not line.lstrip().startswith(("#", '"', "'")) and "weights_only=True" not in line:
                if not any(rel == a and key in line for a, key in allowed):
                    bad.append(f"{rel}:{n}: {line.strip()}")
    assert not bad, "torch.load without weights_only=True:\n" + "\n".join(bad)


def test_no_trust_remote_code():
    hits = [f"{f.relative_to(REPO)}:{n}" for f in sorted((REPO / "anygpt").rglob("*.py"))
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(r"trust_remote_code\s*=\s*True", line)]
    assert not hits, f"trust_remote_code=True in {hits}"


def test_exported_weights_are_safetensors_only(tmp_path, base_tokenizer_dir, demo_cards, infer_support):
    """A bundle written by our export path (make_bundle → save_pretrained + extras) and by
    ``anygpt convert`` holds no pickle weight files."""
    from anygpt.cli.convert import convert

    model = infer_support.make_bundle(tmp_path / "model", base_tokenizer_dir, demo_cards)
    out = convert(model, tmp_path / "converted", dtype="fp32")
    for d in (model, out):
        names = [p.name for p in d.rglob("*") if p.is_file()]
        assert any(n.endswith(".safetensors") for n in names), names
        pickles = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".th", ".pkl", ".ckpt"))]
        assert not pickles, f"{d}: pickle weight files {pickles}"


def test_serve_binds_localhost_with_upload_limits(monkeypatch, tmp_path, base_tokenizer_dir, demo_cards, infer_support):
    """`anygpt serve` as a user runs it (launch captured): 127.0.0.1, no share link, a file-size cap."""
    import gradio

    from anygpt.cli import build_parser


    model = infer_support.make_bundle(tmp_path / "model", base_tokenizer_dir, demo_cards)
    seen = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kw: seen.update(kw))
    monkeypatch.setattr(gradio.Blocks, "queue", lambda self, **kw: self)
    args = build_parser().parse_args(["serve", "--model", str(model), "--out", str(tmp_path / "serve")])
    args._run(args)
    assert seen["server_name"] == "127.0.0.1" and seen["share"] is False
    assert seen["max_file_size"] == f"{int(args.max_upload_mb * 1024)}kb" and 0 < args.max_audio_seconds <= 600


def test_web_upload_of_a_decompression_bomb_is_refused(tmp_path, base_tokenizer_dir, image_tok_dir, infer_support):
    """Through a bundle whose image tokenizer is a real backend (demo-image, reading via anygpt.modality.media)."""
    from anygpt.inference.web import ServeLimits, WebChat
    from anygpt.model.bundle import load_bundle
    from test_hostile_media import png_bomb  # noqa: E402

    model = infer_support.make_bundle(tmp_path / "model", base_tokenizer_dir, cards={"image": image_tok_dir})
    web = WebChat(load_bundle(model), "demo", tmp_path / "serve", ServeLimits(max_upload_mb=1.0), seed=0)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(100_000, 100_000))  # 100 bytes on the wire, 30 GB decoded
    history, *_, img, aud, status, _ = web.respond("what is this", str(bomb), None, "speech", "text", [], None)
    assert status.startswith("**Error:**") and "pixels" in status and img is None and history == []


# ---------------------------------------------------------------- output naming under fuzzing
hostile_ids = st.one_of(st.text(max_size=80), st.sampled_from([
    "..", ".", "../../etc/passwd", "/abs/path", "a/../../b", "..\\..\\win", "C:\\x", "\x00nul", "~/.ssh/id",
    " ", ".hidden", "con", "x" * 400, "é" * 200, "a\nb", "*?<>|"]))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(hostile_ids, min_size=1, max_size=6))
def test_detokenize_names_stay_in_the_output_folder(ids):
    import tempfile

    from anygpt.jobs.detokenize_media import _Writer

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        writer = _Writer(out)
        targets = [writer.target(i, "image") for i in ids]
        assert len(set(targets)) == len(targets)  # unique even when ids collide after cleaning
        for t in targets:
            assert t.parent == out and t.resolve().parent == out.resolve()
            assert not t.name.startswith(".") and len(t.name.encode()) <= 255 and t.suffix == ".png"
            assert re.fullmatch(r"[A-Za-z0-9._-]+", t.name)


def test_tokenize_ids_never_become_paths(tmp_path, image_tok_dir):
    """Hostile ids land in the Parquet rows verbatim; the only files written are the job's own."""
    from modality_fixtures import write_images, write_manifest

    from anygpt.jobs.tokenize_media import tokenize_manifest

    paths = write_images(tmp_path / "img", 4)
    ids = ["../../escape", "/abs/x", "..", "a/../../b\x00"]
    man = write_manifest(tmp_path / "m.jsonl", [{"id": i, "path": str(p)} for i, p in zip(ids, paths)])
    before = {p for p in tmp_path.rglob("*")}
    tokenize_manifest(image_tok_dir, tmp_path / "work" / "out", manifest=man, shard_size=2, progress=False)
    new = {p.relative_to(tmp_path).as_posix() for p in set(tmp_path.rglob("*")) - before if p.is_file()}
    assert all(n.startswith("work/out/") for n in new), new
    import pyarrow.parquet as pq

    got = [i for f in sorted((tmp_path / "work/out").glob("shard-*.parquet")) for i in pq.read_table(f)["id"].to_pylist()]
    assert got == ids
