"""SIGKILL `anygpt tokenize` at random points (several seeds), rerun, check nothing is lost.

Each seed kills the job twice before letting a third run finish: once after a random delay from
start (may land mid-shard, mid-write or mid-merge) and once right after the k-th
shard file appears. After the final run every manifest id is in exactly one shard row or in
errors.jsonl, every ``.parquet`` is complete, and finished shards were never rewritten.
(The deterministic kill-while-blocked-mid-shard case is in tests/test_tokenize_job.py.)"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from modality_fixtures import write_images, write_manifest  # noqa: E402

pytestmark = pytest.mark.faults

N_IMAGES = 36


def job_args(tok: Path, man: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "anygpt.cli", "tokenize", "--modality", "image", "--tokenizer", str(tok),
            "--manifest", str(man), "--out", str(out), "--shard-size", "2", "--no-progress", "--max-error-rate", "0.2"]


def check_visible_state(out: Path) -> dict[str, int]:
    """What a reader could see at any moment: every .parquet complete and readable; an errors
    file for each shard; returns {shard name: inode}."""
    seen = {}
    for f in sorted(out.glob("*.parquet")):
        assert f.name.startswith("shard-"), f"unexpected visible file {f.name}"
        pq.read_table(f)  # a half-written Parquet file has no footer and fails here
        assert (out / f.name.replace(".parquet", ".errors.jsonl")).exists(), "shard without its errors file"
        seen[f.name] = f.stat().st_ino
    return seen


def wait_for(proc: subprocess.Popen, cond, timeout: float = 120) -> bool:
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            return False
        assert time.time() < deadline
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("seed", [0, 1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow),
                                  pytest.param(4, marks=pytest.mark.slow)])
def test_random_kills_then_rerun_loses_nothing(seed, tmp_path, image_tok_dir, child_env):
    rng = random.Random(seed)
    paths = write_images(tmp_path / "img", N_IMAGES, seed=seed)
    (tmp_path / "img" / "bad.png").write_text("not an image")
    rows = [{"id": f"i{k}", "path": str(p)} for k, p in enumerate(paths)]
    rows.insert(rng.randrange(len(rows)), {"id": "bad", "path": "img/bad.png"})
    rows.insert(rng.randrange(len(rows)), {"id": "gone", "path": "img/gone.png"})
    man = write_manifest(tmp_path / "m.jsonl", rows)
    out = tmp_path / "out"
    args = job_args(image_tok_dir, man, out)
    env = child_env()
    kills = []
    finished: dict[str, int] = {}

    def kill(proc: subprocess.Popen, what: str) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills.append(what)
        proc.wait()

    # 1: a random delay once work has begun (shards then take ~15 ms each on this machine)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(proc, lambda: (out / "shard-00000.parquet").exists())
    time.sleep(rng.uniform(0.0, 0.2))
    kill(proc, "random delay")
    finished = check_visible_state(out) if out.exists() else {}
    # 2: right after the k-th new shard appears
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    k = rng.randint(1, 4)
    wait_for(proc, lambda: out.exists() and len(list(out.glob("shard-*.parquet"))) >= len(finished) + k)
    kill(proc, f"after {k} more shards")
    now = check_visible_state(out)
    assert all(now[n] == ino for n, ino in finished.items()), "a finished shard was rewritten"
    finished = now
    # 3: to the end
    proc3 = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc3.returncode == 0, proc3.stderr[-2000:]
    now = check_visible_state(out)
    assert all(now[n] == ino for n, ino in finished.items()), "a finished shard was rewritten"
    ids = [i for f in sorted(out.glob("shard-*.parquet")) for i in pq.read_table(f)["id"].to_pylist()]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(ids + [e["id"] for e in errors]) == sorted(r["id"] for r in rows)  # every input exactly once
    assert len(ids) == len(set(ids)) and {e["id"] for e in errors} == {"bad", "gone"}
    assert not [p for p in out.iterdir() if p.name.startswith(".shard-")], "temp files left behind"
    summary = json.loads((out / "manifest.json").read_text())
    assert summary["items"] == len(rows) and summary["tokenized"] == N_IMAGES
    print(f"seed {seed}: kills {kills}; {len(finished)} shards finished before the last run")
