"""SIGKILL `anygpt train` at random steps (and mid-save), resume, compare with an uninterrupted run;
corrupt checkpoints on disk and check resume=auto reports them and uses the previous good one.

Single process (one rank, gloo) to keep it cheap; one 2-rank case (slow)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kill_after_step import killing  # noqa: E402
from test_train_deepspeed import REPO, train_records, write_recipe  # noqa: E402

from anygpt.train import checkpoint  # noqa: E402
from anygpt.train.launch import launch_command, launch_env  # noqa: E402

pytestmark = pytest.mark.faults

STEPS = 8


def single_env(**extra: str) -> dict[str, str]:
    env = launch_env(**extra)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def train_cmd(recipe: Path) -> list[str]:
    return [sys.executable, "-m", "anygpt.cli", "train", "--config", str(recipe)]


def recipe_for(tmp: Path, tiny: dict) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    return write_recipe(tmp, tiny, steps=STEPS, checkpoint__every=2, checkpoint__keep_last=10, export={"enabled": False})


def run_to_end(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def assert_matches(ref_run: Path, out: Path, resumed_from: int) -> None:
    """Every logged step matches the uninterrupted run (same batches, same loss), and after the
    kill the run went on from ``resumed_from``."""
    ref = {r["step"]: r for r in train_records(ref_run)}
    got = train_records(out)
    assert max(r["step"] for r in got) == STEPS
    if resumed_from < STEPS:
        assert [r["step"] for r in got][-(STEPS - resumed_from):] == list(range(resumed_from + 1, STEPS + 1))
    for r in got:
        assert r["data_hash"] == ref[r["step"]]["data_hash"], f"step {r['step']} saw other batches"
        assert r["loss"] == pytest.approx(ref[r["step"]]["loss"], rel=1e-4, abs=1e-5), f"step {r['step']}"


@pytest.fixture(scope="module")
def reference_run(tiny_train_data, tmp_path_factory) -> Path:
    """One uninterrupted single-process run: checkpoints at 2, 4, 6 and 8 (all kept)."""
    tmp = tmp_path_factory.mktemp("ref")
    run_to_end(train_cmd(recipe_for(tmp, tiny_train_data)), single_env())
    return tmp / "run"


def kill_when(proc: subprocess.Popen, out: Path, step: int, extra_delay: float) -> None:
    """SIGKILL ``proc`` ``extra_delay`` seconds after metrics.jsonl shows ``step`` (may land mid-step or mid-save)."""
    deadline = time.time() + 300
    while True:
        assert proc.poll() is None, "training ended before the kill"
        assert time.time() < deadline
        if (out / "metrics.jsonl").exists() and any(r["step"] >= step for r in train_records(out)):
            break
        time.sleep(0.02)
    time.sleep(extra_delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_at_random_step_then_resume_matches(seed, reference_run, tiny_train_data, tmp_path):
    """Even seeds: SIGKILL right after a random step (tests/kill_after_step.py, exact); odd seeds: SIGKILL
    from outside a random fraction of a step later (may land mid-step or mid-checkpoint-save)."""
    rng = random.Random(seed)
    step = rng.randint(1, STEPS - 2)
    recipe = recipe_for(tmp_path, tiny_train_data)
    out = tmp_path / "run"
    if seed % 2 == 0:
        proc = subprocess.run(killing(train_cmd(recipe), step), cwd=REPO, env=single_env(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        how = f"killed after step {step}"
    else:
        delay = rng.uniform(0.0, 0.15)
        proc = subprocess.Popen(train_cmd(recipe), cwd=REPO, env=single_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kill_when(proc, out, step, delay)
        how = f"killed {delay:.2f} s after step {step} was logged"
    good = checkpoint.latest_complete(out / "checkpoints")
    resumed_from = 0 if good is None else int(good.name[4:])
    if seed % 2 == 0:
        assert resumed_from == step - step % 2  # the newest checkpoint before the kill
    proc2 = run_to_end(train_cmd(recipe), single_env())
    print(f"seed {seed}: {how}; resumed from step {resumed_from}")
    if good is not None:
        assert f"resumed from {good}" in proc2.stdout
    assert_matches(reference_run, out, resumed_from)


def corrupt(tag: Path, how: str) -> None:
    if how == "truncate":
        f = next(tag.glob("*model_states.pt"))
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif how == "flip":
        f = next(tag.glob("*optim_states.pt"))
        data = bytearray(f.read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 8):
            data[i] ^= 0xFF
        f.write_bytes(bytes(data))  # same size: only the checksum can tell
    elif how == "no_record":
        (tag / checkpoint.COMPLETE_FILE).unlink()
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["truncate", "flip", pytest.param("no_record", marks=pytest.mark.slow)])
def test_corrupted_newest_checkpoint_is_reported_and_previous_used(how, reference_run, tiny_train_data, tmp_path):
    recipe = recipe_for(tmp_path, tiny_train_data)
    ckpt = tmp_path / "run" / "checkpoints"
    shutil.copytree(reference_run / "checkpoints", ckpt)
    shutil.rmtree(ckpt / checkpoint.tag_for(8))  # as if killed after the checkpoint at step 6
    corrupt(ckpt / checkpoint.tag_for(6), how)
    proc = run_to_end(train_cmd(recipe), single_env())
    assert f"checkpoint {ckpt / checkpoint.tag_for(6)} skipped" in proc.stderr
    assert f"resumed from {ckpt / checkpoint.tag_for(4)}" in proc.stdout
    assert_matches(reference_run, tmp_path / "run", 4)


@pytest.mark.slow
def test_two_ranks_sigkill_mid_run_then_resume(tiny_train_data, tmp_path):
    """2 ranks (torchrun): an uninterrupted run, and a run whose rank 0 is SIGKILLed from outside."""
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "kill"
    for d in (ref_dir, kill_dir):
        recipe_for(d, tiny_train_data)
    run_to_end(launch_command(ref_dir / "recipe.yaml", nproc=2), launch_env())
    proc = subprocess.Popen(launch_command(kill_dir / "recipe.yaml", nproc=2), cwd=REPO, env=launch_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = kill_dir / "run"
    try:
        kill_when(proc, out, 5, 0.1)  # kills torchrun; its ranks die with the group below
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    good = checkpoint.latest_complete(out / "checkpoints")
    assert good is not None
    run_to_end(launch_command(kill_dir / "recipe.yaml", nproc=2), launch_env())
    assert_matches(ref_dir / "run", out, int(good.name[4:]))
