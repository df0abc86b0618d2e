"""Stopping `anygpt train`: SIGTERM / Ctrl-C stop every rank after the same step with a checkpoint,
and ranks whose launcher was killed stop instead of training on (issue 15, item 7)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from anygpt.train.launch import launch_command, launch_env

REPO = Path(__file__).resolve().parents[1]

TINY_MODEL = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 2, "max_position_embeddings": 256}


def recipe(tmp: Path, tiny: dict, zero: int = 0) -> Path:
    r = {"out_dir": str(tmp / "run"), "steps": 100000, "seed": 0,
         "model": {"tokenizer": tiny["tokenizer"], "from_config": TINY_MODEL},
         "data": {"train": tiny["train"], "weights": [0.5, 0.5], "seq_len": 64},
         "optim": {"lr": 1e-3, "warmup_steps": 1},
         "deepspeed": {"zero_stage": zero, "precision": "fp32", "micro_batch_size": 2, "grad_accum": 1},
         "checkpoint": {"every": 0, "keep_last": 2}, "log": {"every": 1, "tensorboard": False},
         "export": {"enabled": False}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def wait_for_steps(run: Path, proc: subprocess.Popen, n: int = 2, timeout: float = 300) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        m = run / "metrics.jsonl"
        if m.exists() and sum(1 for line in m.read_text().splitlines() if '"train"' in line) >= n:
            return
        time.sleep(0.5)
    raise AssertionError("training did not start")


def ranks_of(run_marker: str) -> list[int]:
    """Pids of live processes whose command line names this run's recipe."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = next(line for line in (d / "status").read_text().splitlines() if line.startswith("State:"))
            except (OSError, StopIteration):
                continue
            if run_marker in cmd and "Z" not in state.split()[1] and int(d.name) != os.getpid():
                out.append(int(d.name))
    return out


def check_stopped_cleanly(run: Path, out: str, err: str) -> int:
    assert "Traceback" not in out + err, (out + err)[-3000:]
    assert "stopping at step" in out and "rerun the same command to resume" in out, out[-2000:]
    tags = sorted((run / "checkpoints").glob("step*"))
    assert tags and (tags[-1] / "anygpt_complete.json").exists()
    return int(tags[-1].name[4:])


def test_sigterm_stops_a_plain_run_with_a_checkpoint(tiny_train_data, tmp_path):
    env = launch_env()
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "anygpt.cli", "train", "--config", str(recipe(tmp_path, tiny_train_data))],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_steps(tmp_path / "run", proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    step = check_stopped_cleanly(tmp_path / "run", out, err)
    logged = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert step == max(logged)  # the checkpoint is of the last step trained


@pytest.mark.slow
def test_sigterm_and_sigkill_to_the_deepspeed_launcher_stop_both_ranks(tiny_train_data, tmp_path):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        tmp = tmp_path / sig.name
        tmp.mkdir()
        cfg = recipe(tmp, tiny_train_data)
        proc = subprocess.Popen(launch_command(cfg, nproc=2, launcher="deepspeed"), cwd=REPO, env=launch_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        wait_for_steps(tmp / "run", proc)
        assert len(ranks_of(str(cfg))) >= 3  # the runner, its launch process, two ranks
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
        t0 = time.time()
        while ranks_of(str(cfg)) and time.time() - t0 < 120:  # no orphan keeps training
            time.sleep(0.5)
        left = ranks_of(str(cfg))
        for pid in left:  # clean up before failing
            os.kill(pid, signal.SIGKILL)
        assert not left, f"{sig.name}: orphaned processes {left}"
        tags = sorted((tmp / "run" / "checkpoints").glob("step*"))
        assert tags and (tags[-1] / "anygpt_complete.json").exists(), sig.name
        n = len((tmp / "run" / "metrics.jsonl").read_text().splitlines())
        time.sleep(2)
        assert len((tmp / "run" / "metrics.jsonl").read_text().splitlines()) == n  # nothing writes on


def test_an_error_mid_run_in_process_gives_the_signal_handlers_back(tiny_train_data, tmp_path, monkeypatch):
    """`anygpt.train.run` in a process that keeps going (a test, a notebook, a sweep): when the loop
    raises, the SIGTERM / SIGINT handlers that were there before the run are there after it."""
    from anygpt.train import loop
    from anygpt.train.config import load_config
    from anygpt.train.distributed import free_port

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": os.environ.get("MASTER_PORT", str(free_port()))}.items():
        monkeypatch.setenv(key, value)  # one in-process rank; restored after the test

    def mine(signum, frame):  # the handlers this process had before training
        raise AssertionError("not called")

    during = {}

    def failing_loss(*args, **kwargs):
        during.update({sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)})
        raise RuntimeError("loss exploded")

    before = {sig: signal.signal(sig, mine) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        monkeypatch.setattr(loop, "token_losses", failing_loss)
        cfg = load_config(recipe(tmp_path, tiny_train_data))  # fails at its first step
        with pytest.raises(RuntimeError, match="loss exploded"):
            loop.run(cfg)
        assert during and all(h is not mine for h in during.values())  # training had its StopWatch installed
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is mine
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
