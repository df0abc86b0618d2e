"""Shared fixtures. Tests run offline (HF_HUB_OFFLINE=1): an accidental download fails at once.

Add area-specific fixtures in the area's own test module; only fixtures several areas use live here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

WORDS = (
    "a the red green blue yellow purple orange circle square triangle star small large on white "
    "background piano violin flute guitar slow fast fast-paced calm happy sad melody in C major minor "
    "hello world how are you today please describe this picture read text out loud music speech image "
    "one two three four five six seven eight nine ten"
).split()


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: this checkout importable, offline, one thread each."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"})
    env.update(extra)
    return env


def run_cli(*args: str, check: bool = True, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """Run ``python -m anygpt.cli ARGS`` in a child process and return its result."""
    proc = subprocess.run(
        [sys.executable, "-m", "anygpt.cli", *map(str, args)],
        cwd=REPO, env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"anygpt {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def sp_model_file(tmp_path_factory) -> Path:
    """A small LLaMA-style sentencepiece model trained on a word soup (bos=1, eos=2, unk=0)."""
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("sp")
    rng = random.Random(0)
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(3000)))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(d / "sp"), vocab_size=320, model_type="bpe",
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, byte_fallback=True, minloglevel=2,
    )
    return d / "sp.model"


@pytest.fixture(scope="session")
def base_tokenizer_dir(sp_model_file, tmp_path_factory) -> Path:
    """The sentencepiece model saved as a Hugging Face tokenizer directory (not grown)."""
    from anygpt.vocab import load_base_tokenizer

    d = tmp_path_factory.mktemp("base_tok")
    load_base_tokenizer(sp_model_file).save_pretrained(str(d))
    return d


@pytest.fixture
def base_tokenizer(base_tokenizer_dir):
    """A fresh (ungrown) copy of the base tokenizer for each test."""
    from anygpt.vocab import load_base_tokenizer

    return load_base_tokenizer(base_tokenizer_dir)


@pytest.fixture(scope="session", autouse=True)
def console_output():
    """Library calls print what the ``anygpt`` command prints: the package logs, and the CLI's
    console handler (set up here as ``main()`` does) writes the plain lines tests read; records
    still reach pytest's own capture (``caplog``)."""
    from anygpt.utils import console_logging

    console_logging(propagate=True)


@pytest.fixture
def logged_warning(caplog):
    """``with logged_warning(r"regex"): ...`` fails unless the block logs a warning matching it
    (the package reports repairs through logging; pytest's ``caplog`` receives the records)."""

    @contextlib.contextmanager
    def expect(pattern: str):
        start = len(caplog.records)
        yield
        said = [r.getMessage() for r in caplog.records[start:] if r.levelno >= logging.WARNING]
        assert any(re.search(pattern, m) for m in said), f"no warning matching {pattern!r}; logged: {said}"

    return expect


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cli():
    """``cli("vocab", "--base", d)`` runs the command line in a child process (see run_cli)."""
    return run_cli


@pytest.fixture(scope="session")
def child_env():
    """``child_env(KEY=VAL)``: environment for child processes that import this checkout."""
    return subprocess_env


@pytest.fixture(scope="session")
def tiny_train_data(base_tokenizer_dir, tmp_path_factory) -> dict:
    """A grown tokenizer dir plus small training sets (HF ``save_to_disk``) for training tests:
    ``{"tokenizer": dir, "train": [image_dir, speech_dir], "val": [dir], "layout": VocabLayout}``.

    Samples are learnable: a text prefix, then a media span whose codes count up from a random start."""
    from datasets import Dataset

    from anygpt.data.datainfo import write_data_info
    from anygpt.vocab import VocabLayout, load_base_tokenizer

    root = tmp_path_factory.mktemp("train_data")
    tok = load_base_tokenizer(base_tokenizer_dir)
    layout = VocabLayout.from_profile("default", len(tok), {"image": 64, "speech": 32, "music": 0})
    layout.grow_tokenizer(tok)
    tok.save_pretrained(str(root / "tok"))
    layout.save(root / "tok")
    rng = random.Random(0)

    def make(modality: str, n: int, name: str) -> str:
        rows = {k: [] for k in ("input_ids", "labels", "modality", "direction", "source", "length")}
        codes = layout.code_range(modality)
        for i in range(n):
            direction = "t2x" if i % 2 else "x2t"
            text = [rng.randint(3, 40) for _ in range(rng.randint(3, 8))]
            start = rng.randrange(len(codes))
            span = layout.span_ids(modality, [(start + j) % len(codes) for j in range(rng.randint(8, 24))])
            ids = [1] + (text + span if direction == "t2x" else span + text) + [2]
            labels = [-100] * (1 + len(text)) + ids[1 + len(text):] if direction == "t2x" else list(ids)
            for k, v in (("input_ids", ids), ("labels", labels), ("modality", modality), ("direction", direction),
                         ("source", name), ("length", len(ids))):
                rows[k].append(v)
        path = root / name
        Dataset.from_dict(rows).save_to_disk(str(path))
        write_data_info(path, {"layout": layout.to_dict(), "tokenizer_fingerprints": {modality: f"demo-{modality}"}, "template": "chat@1"})
        return str(path)

    return {"tokenizer": str(root / "tok"), "layout": layout,
            "train": [make("image", 160, "image_text"), make("speech", 160, "speech_text")],
            "val": [make("image", 24, "val_image")]}


@pytest.fixture(scope="session")
def infer_support():
    """``tests/infer_support.py`` as a module: ``make_bundle`` and ``write_example_media``."""
    import importlib.util

    if "infer_support" not in sys.modules:
        spec = importlib.util.spec_from_file_location("infer_support", REPO / "tests" / "infer_support.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["infer_support"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["infer_support"]


@pytest.fixture(scope="session")
def image_tok_dir(tmp_path_factory) -> Path:
    """A demo-image tokenizer card dir fitted on 20 shape pictures (32 codes; seconds)."""
    import numpy as np

    from anygpt.modality.kmeans_tokenizer import KMeansImageTokenizer

    sys.path.insert(0, str(REPO / "tests"))
    from modality_fixtures import shape_image

    d = tmp_path_factory.mktemp("img_tok")
    rng = np.random.default_rng(1)
    KMeansImageTokenizer.fit([shape_image(rng) for _ in range(20)], d, codebook_size=32, iters=5)
    return d


@pytest.fixture(scope="session")
def speech_tok_dir(tmp_path_factory) -> Path:
    """A demo-speech tokenizer card dir fitted on 10 synthetic vowels (32 codes; seconds)."""
    import numpy as np

    from anygpt.modality.kmeans_tokenizer import KMeansSpeechTokenizer

    sys.path.insert(0, str(REPO / "tests"))
    from modality_fixtures import vowel

    d = tmp_path_factory.mktemp("sp_tok")
    rng = np.random.default_rng(2)
    KMeansSpeechTokenizer.fit([vowel(rng) for _ in range(10)], d, codebook_size=32, iters=5, max_seconds=5.0)
    return d


@pytest.fixture(scope="session")
def small_image_tok_dir(tmp_path_factory) -> Path:
    """A demo-image card dir: 32 px pictures in 16 px patches, 4 codes per image from 16 (seconds);
    what the inference tests generate, so a forced image is 4 codes long."""
    import numpy as np

    from anygpt.modality.kmeans_tokenizer import KMeansImageTokenizer

    sys.path.insert(0, str(REPO / "tests"))
    from modality_fixtures import shape_image

    d = tmp_path_factory.mktemp("small_img_tok")
    rng = np.random.default_rng(3)
    KMeansImageTokenizer.fit([shape_image(rng) for _ in range(20)], d, codebook_size=16, iters=5, image_size=32, patch_size=16)
    return d


@pytest.fixture(scope="session")
def music_tok_dir(tmp_path_factory) -> Path:
    """A demo-music card dir fitted on six 1 s harmonic tones at 22.05 kHz (32 codes; seconds). At
    most 2 s (50 codes) per clip, which also bounds what a test's model is asked to generate."""
    from anygpt.modality.kmeans_tokenizer import KMeansMusicTokenizer
    from anygpt.modality.testing import audio_corpus

    d = tmp_path_factory.mktemp("mu_tok")
    KMeansMusicTokenizer.fit(audio_corpus(22050, 6, seed=4), d, codebook_size=32, iters=5, max_seconds=2.0)
    return d


@pytest.fixture(scope="session")
def encodec_music_card(tmp_path_factory) -> Path:
    """A music card for the ``encodec`` backend over a random-weight 24 kHz EnCodec checkpoint in
    the published file layout, at 1.5 kbps: 2 RVQ layers × 1024 codes, frame-major, 75 frames/s
    (codebooks filled from encoder frames of real tones, so codes vary). The card dir holds only
    ``card.yaml``, naming the 90 MB checkpoint's folder, so a bundle copies the card, not the weights."""
    from anygpt.modality.base import TokenizerCard
    from anygpt.modality.testing import save_random_encodec

    ckpt = save_random_encodec(tmp_path_factory.mktemp("encodec_ckpt"), "24khz")
    d = tmp_path_factory.mktemp("encodec_card")
    TokenizerCard("encodec", "music", d, {"path": str(ckpt.parent), "variant": "24khz", "bandwidth": 1.5,
                                          "max_seconds": 5.0}).save(d)
    return d


@pytest.fixture(scope="session")
def demo_cards(small_image_tok_dir, speech_tok_dir, music_tok_dir) -> dict[str, Path]:
    """The real demo (k-means) tokenizer cards of the inference tests: ``{modality: card dir}``."""
    return {"image": small_image_tok_dir, "speech": speech_tok_dir, "music": music_tok_dir}


@pytest.fixture(scope="module")
def torch_one_thread():
    """torch on one thread for a module: a 32-wide model is ~100x slower with 2 threads on a busy
    2-core machine. Request it from a module-level autouse fixture."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
