"""Test helper shared by the eval harness and demo tests (loaded by path: tests are not a package)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pytest

from anygpt.eval import metrics as M


def assert_scores_match_examples(eval_dir: Path, keys: Sequence[str]) -> None:
    """Each ``task.metric`` in ``keys`` equals the score its task's recorded examples give, so a
    wrong aggregation, a score from nothing or an out-of-range value fails. Needs every item
    recorded (``n`` <= the run's ``n_examples``)."""
    for key in keys:
        task, metric = key.split(".")
        r = json.loads((Path(eval_dir) / f"{task}.json").read_text())
        ex, value = r["examples"], r["metrics"][metric]
        assert len(ex) == r["n"] > 0, key
        if metric == "wer":
            refs = [e["reference"] if task == "asr" else e["input"] for e in ex]
            hyps = [e["output"] if task == "asr" else e["own_asr"] for e in ex]
            assert value == pytest.approx(M.word_error_rate(refs, hyps, numbers_as_words=True)), key
        else:
            parts = ["instrument"] if metric == "instrument_accuracy" else ["colour", "shape"]
            right = [all(str(e["recovered"][k]).lower() == str(e["attributes"][k]).lower() for k in parts) for e in ex]
            assert 0.0 <= value <= 1.0 and value == pytest.approx(sum(right) / len(right)), key

