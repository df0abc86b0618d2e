"""The tokenize job's files in its output folder: shard and errors names, ``job.json`` written
once (``O_EXCL`` semantics), per-rank ``fcntl`` locks, cleanup of a killed run's temp files, and the
check that each shard holds exactly its manifest rows. Why each exists: the docstring of
:mod:`anygpt.jobs.tokenize_media`."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from anygpt.jobs.manifest import ManifestItem
from anygpt.utils import dist_info, read_jsonl

JOB_FILE = "job.json"
ERRORS_FILE = "errors.jsonl"
SUMMARY_FILE = "manifest.json"


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.parquet"


def errors_name(k: int) -> str:
    return f"shard-{k:05d}.errors.jsonl"


def remove_stale_temps(out: Path, k: int) -> list[Path]:
    """Delete the temp files a killed run left for shard ``k`` (``.shard-KKKKK.*.tmp``); returns them.

    Called only for shards this rank is about to write; a temp file whose name carries the pid of
    another live process (``atomic_path`` names) is left alone: that process is writing it."""
    stale = [p for p in out.glob(f".shard-{k:05d}.*") if p.name.endswith(".tmp") and not _written_by_live_process(p)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _written_by_live_process(p: Path) -> bool:
    parts = p.name.split(".")
    pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _check_job_file(out: Path, job: dict) -> None:
    """Refuse to resume into a directory made from another manifest / shard size / tokenizer."""
    path = out / JOB_FILE
    if not _create_exclusive(path, json.dumps(job, indent=1, sort_keys=True)):
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = [k for k in ("manifest_hash", "shard_size", "fingerprint", "modality", "windows") if old.get(k) != job.get(k)]
        if diff:
            raise ValueError(f"{out}: holds a job with different {', '.join(diff)} "
                             f"({', '.join(f'{k}={old.get(k)}' for k in diff)}); use a new --out directory")


def _create_exclusive(path: Path, text: str) -> bool:
    """Write ``path`` only if it does not exist, atomically and complete (a fsynced temp file
    hard-linked into place: the link fails when another process made the file first).
    Returns False when the file already existed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


class JobBusy(ValueError):
    """Another live process holds this tokenize job (same folder and rank, or the same shard)."""


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[bool]:
    """Hold an ``fcntl`` (POSIX) lock on ``path`` (its content: the holder's pid) for the ``with`` block.
    Yields True when taken, False when a live process holds it (``what`` names it in messages).
    The kernel releases the lock when its holder dies, so a stale lock file never blocks."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            # a POSIX record lock, not flock: forked children (the job's media-reading workers) do
            # not inherit it, so a SIGKILLed job's orphaned workers never block the rerun
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield True
    finally:
        os.close(fd)  # closing drops the lock


def lock_holder(path: Path) -> str:
    """The pid written in a lock file, for messages ("?" when unreadable)."""
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def verify_shard_ids(out: Path, items: list[ManifestItem], shard_size: int, n_shards: int) -> None:
    """Check that each shard's rows (Parquet rows plus its errors file) are exactly its manifest
    rows: every item present once (as one row, or as its windows ``<id>@<offset>``, each once),
    nothing foreign. A shard that is not (another job wrote it) is deleted, with its errors file,
    and a ``ValueError`` names it: a rerun redoes it."""
    import pyarrow.parquet as pq

    bad = []
    for k in range(n_shards):
        want = {it.id for it in items[k * shard_size:(k + 1) * shard_size]}
        table = pq.read_table(out / shard_name(k))
        row_ids = [str(i) for i in table.column("id").to_pylist()]
        offsets = table.column("offset").to_pylist() if "offset" in table.column_names else [None] * len(row_ids)
        got = [_item_of(rid, off, want) for rid, off in zip(row_ids, offsets)]
        ep = out / errors_name(k)
        if ep.exists():
            got += [str(rec["id"]) for _, rec in read_jsonl(ep)]
            row_ids += got[len(row_ids):]
        if set(got) != want or len(set(row_ids)) != len(row_ids):
            missing, extra = sorted(want - set(got)), sorted(set(got) - want)
            bad.append(f"{shard_name(k)} (missing {missing[:3]}, foreign {extra[:3]}, {len(row_ids)} rows for "
                       f"{len(want)} items)")
            (out / shard_name(k)).unlink(missing_ok=True)
            ep.unlink(missing_ok=True)
    if bad:
        raise ValueError(f"{out}: shards that do not hold their manifest rows were removed: {'; '.join(bad[:5])}; "
                         "rerun the same command to redo them")


def _item_of(row_id: str, offset: float | None, items: set[str]) -> str:
    """The manifest id a shard row belongs to: its own id, or a window's id less ``@<offset>``."""
    if row_id in items or offset is None:
        return row_id
    suffix = f"@{offset:g}"
    return row_id[: -len(suffix)] if row_id.endswith(suffix) else row_id


def _exclusive_per_rank(job: Any) -> Any:
    """Run ``job(card, out_dir, **kw)`` holding ``OUT/.lock-rank-R`` (see the module docstring);
    a second live job for that folder and rank raises :class:`JobBusy` naming the holder's pid."""
    import functools

    @functools.wraps(job)
    def run(card: Any, out_dir: str | os.PathLike, **kw: Any) -> Any:
        rank = kw.get("rank")
        rank = dist_info()[0] if rank is None else rank
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        lock = out / f".lock-rank-{rank}"
        with exclusive_lock(lock, "tokenize job") as held:
            if not held:
                raise JobBusy(f"{out}: another tokenize job (pid {lock_holder(lock)}) is running rank {rank} in this "
                              "folder; wait for it to finish or use another --out")
            return job(card, out_dir, **kw)

    return run

