"""Two `anygpt tokenize` jobs on one output folder (issue 19 item 4): the second live job is
refused naming the first one's pid, a killed or paused-then-finished job leaves nothing mixed,
another live process's temp file is never deleted, and a shard that does not hold exactly its
manifest rows is caught at merge (removed; a rerun redoes it) instead of being reported as
success."""

from __future__ import annotations

import json
import shutil
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

REPO = Path(__file__).resolve().parents[2]


def job(tok: Path, man: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "anygpt.cli", "tokenize", "--modality", "image", "--tokenizer", str(tok),
            "--manifest", str(man), "--out", str(out), "--shard-size", "2", "--no-progress", *extra]


def manifests(tmp_path: Path) -> tuple[Path, Path]:
    a = write_images(tmp_path / "a", 24, seed=1)
    b = write_images(tmp_path / "b", 24, seed=2)
    ma = write_manifest(tmp_path / "a.jsonl", [{"id": f"a{k}", "path": str(p)} for k, p in enumerate(a)])
    mb = write_manifest(tmp_path / "b.jsonl", [{"id": f"b{k}", "path": str(p)} for k, p in enumerate(b)])
    return ma, mb


def shard_ids(out: Path) -> list[str]:
    return sorted(i for f in sorted(out.glob("shard-*.parquet")) for i in pq.read_table(f)["id"].to_pylist())


def test_second_live_job_is_refused_and_the_first_finishes_alone(tmp_path, image_tok_dir, child_env):
    ma, mb = manifests(tmp_path)
    out = tmp_path / "out"
    env = child_env()
    first = subprocess.Popen(job(image_tok_dir, ma, out), cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (out / "shard-00000.parquet").exists():
            assert first.poll() is None and time.time() < deadline, "first job ended before its first shard"
            time.sleep(0.005)
        first.send_signal(signal.SIGSTOP)  # alive, holding the folder, perhaps mid-write
        for man in (ma, mb):
            second = subprocess.run(job(image_tok_dir, man, out), cwd=REPO, env=env, capture_output=True, text=True,
                                    timeout=300)
            assert second.returncode == 2, second.stdout + second.stderr
            assert f"another tokenize job (pid {first.pid})" in second.stderr or "different manifest_hash" in second.stderr
            assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert shard_ids(out) == sorted(f"a{k}" for k in range(24))


@pytest.mark.slow
def test_another_live_process_temp_file_survives_cleanup(tmp_path, image_tok_dir, child_env):
    ma, _ = manifests(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        live = out / f".shard-00000.parquet.{sleeper.pid}.tmp"
        dead = out / ".shard-00001.parquet.999999999.tmp"
        live.write_bytes(b"being written")
        dead.write_bytes(b"left by a killed run")
        proc = subprocess.run(job(image_tok_dir, ma, out), cwd=REPO, env=child_env(), capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert live.read_bytes() == b"being written", "a live process's temp file was deleted"
        assert not dead.exists(), "a dead run's temp file was kept"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_merge_catches_a_shard_from_another_manifest(tmp_path, image_tok_dir, child_env):
    ma, mb = manifests(tmp_path)
    out, other = tmp_path / "out", tmp_path / "other"
    env = child_env()
    run = lambda *a: subprocess.run(list(a), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # noqa: E731
    assert run(*job(image_tok_dir, ma, out, "--max-shards", "3")).returncode == 0
    assert run(*job(image_tok_dir, mb, other)).returncode == 0
    shutil.copy(other / "shard-00001.parquet", out / "shard-00001.parquet")  # a folder two jobs wrote into
    mixed = run(*job(image_tok_dir, ma, out))
    assert mixed.returncode == 2, mixed.stdout + mixed.stderr
    assert "shard-00001.parquet (missing ['a2', 'a3'], foreign ['b2', 'b3']" in mixed.stderr
    assert not (out / "manifest.json").exists()
    again = run(*job(image_tok_dir, ma, out))
    assert again.returncode == 0, again.stderr[-2000:]
    assert shard_ids(out) == sorted(f"a{k}" for k in range(24))
    assert json.loads((out / "manifest.json").read_text())["tokenized"] == 24


def test_job_file_is_created_exclusively(tmp_path):
    from anygpt.jobs.job_files import _create_exclusive

    assert _create_exclusive(tmp_path / "job.json", '{"a": 1}') is True
    assert _create_exclusive(tmp_path / "job.json", '{"b": 2}') is False
    assert (tmp_path / "job.json").read_text() == '{"a": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["job.json"]  # no temp left
