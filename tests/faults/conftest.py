"""Fixtures of the faults suite: tiny demo tokenizers (fit in seconds) shared by its modules."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from modality_fixtures import shape_image, vowel  # noqa: E402


@pytest.fixture(scope="session")
def image_tok_dir(tmp_path_factory) -> Path:
    from anygpt.modality.demo import DemoImageTokenizer

    d = tmp_path_factory.mktemp("faults_img_tok")
    rng = np.random.default_rng(1)
    DemoImageTokenizer.fit([shape_image(rng) for _ in range(20)], d, codebook_size=32, iters=5)
    return d


@pytest.fixture(scope="session")
def speech_tok_dir(tmp_path_factory) -> Path:
    from anygpt.modality.demo import DemoSpeechTokenizer

    d = tmp_path_factory.mktemp("faults_sp_tok")
    rng = np.random.default_rng(2)
    DemoSpeechTokenizer.fit([vowel(rng) for _ in range(10)], d, codebook_size=32, iters=5, max_seconds=5.0)
    return d
