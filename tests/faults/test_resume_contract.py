"""The resume contract and the training preflight (issue 19 items 5 and 6, issue 15 item 2).

A run killed after step 3 (checkpoint at step 2) is resumed with changed settings: each unsafe
change (the learning rate, the micro batch, the sequence length, packing, a model dimension, the
dataset's content at the same size) is refused with one line listing the differences and leaves
``config.yaml`` as it was; more steps is accepted, printed, recorded in ``resume_changes.jsonl``,
and ``metrics.jsonl`` then holds every step once. A training set that cannot teach anything
(empty, every label -100) or a ``data.seq_len`` beyond the model's positions is one line before
any work."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kill_after_step import killing  # noqa: E402
from test_train_deepspeed import REPO, train_records, write_recipe  # noqa: E402

from anygpt.train.launch import launch_env  # noqa: E402

pytestmark = pytest.mark.faults


def single_env(**extra: str) -> dict[str, str]:
    env = launch_env(**extra)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def train(recipe: Path, *overrides: str, kill_after: int | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "anygpt.cli", "train", "--config", str(recipe), *overrides]
    return subprocess.run(cmd if kill_after is None else killing(cmd, kill_after),
                          cwd=REPO, env=single_env(), capture_output=True, text=True, timeout=600)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("anygpt train: error:")]


@pytest.fixture(scope="module")
def killed_run(tiny_train_data, tmp_path_factory) -> Path:
    """Steps 1–3 logged, checkpoint at step 2, then SIGKILL (tests/kill_after_step.py): a folder to resume.
    Its training sets are copies, so a test may change their content."""
    from datasets import load_from_disk

    tmp = tmp_path_factory.mktemp("killed")
    data = []
    for i, src in enumerate(tiny_train_data["train"]):
        dst = tmp / f"data{i}"
        load_from_disk(src).save_to_disk(str(dst))
        data.append(str(dst))
    recipe = write_recipe(tmp, {**tiny_train_data, "train": data}, steps=4, checkpoint__every=2,
                          checkpoint__keep_last=10, export={"enabled": False})
    proc = train(recipe, kill_after=3)
    assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert [r["step"] for r in train_records(tmp / "run")] == [1, 2, 3]
    return tmp


@pytest.fixture
def resumable(killed_run, tmp_path) -> Path:
    """A private copy of the killed run (recipe, data and run folder, with paths rewritten)."""
    dst = tmp_path / "k"
    shutil.copytree(killed_run, dst)
    for f in (dst / "recipe.yaml", dst / "run" / "config.yaml", dst / "run" / "run_contract.json"):
        if f.exists():
            f.write_text(f.read_text().replace(str(killed_run), str(dst)))
    return dst


@pytest.mark.parametrize("overrides, listed", [
    (["optim.lr=0.01"], ["optim.lr: 0.003 -> 0.01"]),
    pytest.param(["deepspeed.micro_batch_size=2", "data.seq_len=64", "data.pack=false"],
                 ["data.pack: true -> false", "data.seq_len: 128 -> 64", "deepspeed.micro_batch_size: 4 -> 2"],
                 marks=pytest.mark.slow),
    pytest.param(["model.from_config.hidden_size=32"], ["model.from_config.hidden_size: 64 -> 32"], marks=pytest.mark.slow),
])
def test_unsafe_change_on_resume_is_refused_with_the_differences(resumable, overrides, listed):
    before = (resumable / "run" / "config.yaml").read_text()
    proc = train(resumable / "recipe.yaml", *overrides)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    [line] = error_lines(proc)
    for item in listed:
        assert item in line
    assert "checkpoint.resume=none" in line and "Traceback" not in proc.stderr
    assert (resumable / "run" / "config.yaml").read_text() == before  # still says what the checkpoints were made with


@pytest.mark.slow
def test_changed_dataset_content_of_the_same_size_is_refused(resumable):
    from datasets import Dataset, load_from_disk

    d0 = resumable / "data0"
    ds = load_from_disk(str(d0)).to_dict()
    ds["input_ids"] = [list(reversed(x)) for x in ds["input_ids"]]  # same rows, same sizes, other tokens
    shutil.rmtree(d0)
    Dataset.from_dict(ds).save_to_disk(str(d0))
    proc = train(resumable / "recipe.yaml")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    [line] = error_lines(proc)
    assert f"data content of {d0}: fingerprint" in line


def test_more_steps_is_accepted_recorded_and_metrics_hold_each_step_once(resumable):
    proc = train(resumable / "recipe.yaml", "steps=6")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resume: steps changed 4 -> 6 (safe: accepted)" in proc.stdout
    assert "resume: the cosine schedule now ends at step 6: lr at step 2 is" in proc.stdout
    assert "metrics.jsonl: dropped 1 line(s) past step 2" in proc.stdout
    [change] = [json.loads(x) for x in (resumable / "run" / "resume_changes.jsonl").read_text().splitlines()]
    assert (change["key"], change["old"], change["new"]) == ("steps", 4, 6)
    assert yaml.safe_load((resumable / "run" / "config.yaml").read_text())["steps"] == 6
    assert [r["step"] for r in train_records(resumable / "run")] == [1, 2, 3, 4, 5, 6]


def _dataset(path: Path, rows: list[tuple[list[int], list[int]]]) -> str:
    from datasets import Dataset

    Dataset.from_dict({"input_ids": [r[0] for r in rows], "labels": [r[1] for r in rows],
                       "length": [len(r[0]) for r in rows]}).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("case", ["all_ignored", pytest.param("empty", marks=pytest.mark.slow),
                                  pytest.param("seq_len", marks=pytest.mark.slow)])
def test_training_that_cannot_learn_is_one_line_before_any_work(case, tiny_train_data, tmp_path):
    over: dict = {}
    if case == "all_ignored":
        data = [_dataset(tmp_path / "d", [([1, 5, 6, 7, 8, 9, 10, 2], [-100] * 8)] * 200)]  # enough for batches
        want = "every label is -100, so there is nothing to learn"
    elif case == "empty":
        from datasets import Dataset, Features, Sequence, Value

        feats = Features({"input_ids": Sequence(Value("int64")), "labels": Sequence(Value("int64")),
                          "length": Value("int64")})
        Dataset.from_dict({"input_ids": [], "labels": [], "length": []}, features=feats).save_to_disk(str(tmp_path / "d"))
        data = [str(tmp_path / "d")]
        want = "has no samples"
    else:
        data = tiny_train_data["train"][:1]
        over = {"data__seq_len": 1024}
        want = "data.seq_len 1024 is longer than the model's 256 positions"
    recipe = write_recipe(tmp_path, {**tiny_train_data, "train": data}, export={"enabled": False}, **over)
    cfg = yaml.safe_load(recipe.read_text())
    cfg["data"].pop("weights")
    recipe.write_text(yaml.safe_dump(cfg))
    proc = train(recipe)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    [line] = error_lines(proc)
    assert want in line and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
