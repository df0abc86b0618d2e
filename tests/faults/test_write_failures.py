"""Disk full / I/O errors injected into the writers (the N-th call of a write raises
``OSError(ENOSPC or EIO)``): no half-written shard or checkpoint is ever visible, temp files are
cleaned up, ``latest`` is not advanced, and a rerun completes."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from modality_fixtures import write_images, write_manifest  # noqa: E402

from anygpt.jobs.tokenize_media import tokenize_manifest  # noqa: E402

pytestmark = pytest.mark.faults


class FailOnCall:
    """Wrap ``real`` so that its ``n``-th call (1-based) raises ``OSError(code)``; with
    ``partial`` the failing call first writes half a file to its path argument (disk filling up
    mid-write). Counts every call in ``calls``."""

    def __init__(self, real, n: int, code: int = errno.ENOSPC, partial=None):
        self.real, self.n, self.code, self.partial, self.calls = real, n, code, partial, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            if self.partial is not None:
                self.partial(*args)
            raise OSError(self.code, os.strerror(self.code))
        return self.real(*args, **kwargs)


def manifest(tmp_path: Path, n: int = 9) -> tuple[Path, list[str]]:
    paths = write_images(tmp_path / "img", n)
    rows = [{"id": f"i{k}", "path": str(p)} for k, p in enumerate(paths)]
    return write_manifest(tmp_path / "m.jsonl", rows), [r["id"] for r in rows]


def assert_clean(out: Path) -> set[str]:
    """No temp file, every visible .parquet complete; returns the ids in the shards."""
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")], "temp files left behind"
    ids: list[str] = []
    for f in out.glob("*.parquet"):
        ids += pq.read_table(f)["id"].to_pylist()  # a partial Parquet file fails to read
    assert len(ids) == len(set(ids))
    return set(ids)


def half_parquet(table, where, *a):
    Path(where).write_bytes(b"PAR1" + b"\0" * 100)  # a Parquet header and no footer


@pytest.mark.parametrize("target,n,code", [
    ("write_table", 2, errno.ENOSPC),    # the second shard's Parquet write fails half way
    ("replace", 1, errno.EIO),           # the first rename (shard 0's errors file) fails
    ("replace", 4, errno.ENOSPC),        # shard 1's Parquet rename fails: its errors file is already there
    ("replace", 7, errno.EIO),           # errors.jsonl of the merge fails after every shard is written
    ("write", 3, errno.ENOSPC),          # a temp file's bytes cannot be written (atomic_write_bytes)
])
def test_tokenize_write_failure_leaves_no_partial_shard(target, n, code, tmp_path, image_tok_dir, monkeypatch):
    import pyarrow.parquet

    import anygpt.utils

    man, ids = manifest(tmp_path)
    out = tmp_path / "out"
    if target == "write_table":
        hook = FailOnCall(pyarrow.parquet.write_table, n, code, partial=half_parquet)
        monkeypatch.setattr(pyarrow.parquet, "write_table", hook)
    elif target == "replace":
        hook = FailOnCall(os.replace, n, code)
        monkeypatch.setattr(anygpt.utils.os, "replace", hook)
    else:
        real_fdopen = os.fdopen
        counter = {"n": 0}

        class FailingFile:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                counter["n"] += 1
                if counter["n"] == n:
                    self.f.write(data[: len(data) // 2])
                    raise OSError(code, os.strerror(code))
                return self.f.write(data)

            def __getattr__(self, name):
                return getattr(self.f, name)

        monkeypatch.setattr(anygpt.utils.os, "fdopen", lambda fd, mode="r", *a, **k: FailingFile(real_fdopen(fd, mode, *a, **k)))
        hook = counter
    with pytest.raises(OSError) as err:
        tokenize_manifest(image_tok_dir, out, manifest=man, shard_size=3, progress=False)
    assert err.value.errno == code
    before = assert_clean(out)
    assert not (out / "manifest.json").exists()
    monkeypatch.undo()
    res = tokenize_manifest(image_tok_dir, out, manifest=man, shard_size=3, progress=False)
    assert res.merged and res.errors == 0
    assert assert_clean(out) == set(ids) and before <= set(ids)
    assert json.loads((out / "manifest.json").read_text())["tokenized"] == len(ids)


@pytest.fixture(scope="module")
def tiny_recipe(tiny_train_data, tmp_path_factory):
    from test_train_deepspeed import write_recipe

    def make(name: str) -> Path:
        d = tmp_path_factory.mktemp(name)
        return write_recipe(d, tiny_train_data, steps=4, checkpoint__every=2, export={"enabled": False})

    return make


@pytest.mark.parametrize("n,code", [(4, errno.ENOSPC), (6, errno.EIO)])
def test_checkpoint_write_failure_leaves_previous_latest(n, code, tiny_recipe, monkeypatch):
    """torch.save is called 3 times per checkpoint (model states, optimizer states, our rank file):
    the 4th / 6th call is the final checkpoint's first / last file."""
    import torch

    from anygpt.train import checkpoint
    from anygpt.train.config import load_config
    from anygpt.train.loop import run

    from anygpt.train.distributed import free_port

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": os.environ.get("MASTER_PORT", str(free_port()))}.items():
        monkeypatch.setenv(key, value)  # one in-process rank; restored after the test (children must not inherit it)
    recipe = tiny_recipe(f"ckpt_fail_{n}")
    cfg = load_config(recipe)
    ckpt = Path(cfg.out_dir) / "checkpoints"
    hook = FailOnCall(torch.save, n, code,
                      partial=lambda obj, where, *a: Path(where).write_bytes(b"PK\x03\x04" + b"\0" * 64))
    monkeypatch.setattr(torch, "save", hook)
    with pytest.raises(OSError) as err:
        run(cfg)
    assert err.value.errno == code and hook.calls == n
    assert [s for s, _ in checkpoint.list_tags(ckpt)] == [2]  # the failed tag dir is gone
    assert (ckpt / "latest").read_text() == checkpoint.tag_for(2)
    assert not list(ckpt.rglob("*.tmp"))
    monkeypatch.setattr(torch, "save", hook.real)
    run(load_config(recipe))  # resume=auto from step 2
    assert checkpoint.latest_complete(ckpt).name == checkpoint.tag_for(4)
    assert (ckpt / "latest").read_text() == checkpoint.tag_for(4)


def test_cli_reports_a_full_disk_in_one_line(tmp_path, image_tok_dir, monkeypatch, capsys):
    import pyarrow.parquet

    from anygpt.cli import main

    man, ids = manifest(tmp_path, 4)
    monkeypatch.setattr(pyarrow.parquet, "write_table", FailOnCall(pyarrow.parquet.write_table, 1, partial=half_parquet))
    args = ["tokenize", "--modality", "image", "--tokenizer", str(image_tok_dir), "--manifest", str(man),
            "--out", str(tmp_path / "out"), "--shard-size", "2", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("anygpt tokenize: error: [Errno 28]") and "rerun" in err and "\n" not in err
    monkeypatch.undo()
    assert main(args) == 0 and assert_clean(tmp_path / "out") == set(ids)
