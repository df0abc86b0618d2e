"""DeepSpeed checkpoints that survive a kill mid-save.

Each checkpoint is a DeepSpeed tag dir ``CKPT/step00000120/`` (model, optimizer, scheduler) plus
one ``anygpt_rank{r}.pt`` per rank (step, loader position, python/numpy/torch RNG). Only after
every rank has finished writing does rank 0 write ``anygpt_complete.json`` (atomic rename) listing
the files with their sizes and CRC-32 checksums; a tag without it, with a listed file missing or of
another size (truncated), is never trusted. Resume (``auto``) takes the newest tag that passes
:func:`verify` (sizes and checksums: flipped bytes are caught too) and reports every newer tag it
skips and why; keep-last-N pruning only ever deletes older tags. A save that fails (disk full)
removes its partial tag dir, so a failed save never looks like a checkpoint. DeepSpeed's
``CKPT/latest`` pointer (read by ``zero_to_fp32.py``) is written by us, atomically, only after the
completion record, so it never names a half-written tag.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from anygpt.utils import atomic_write_text

log = logging.getLogger(__name__)

COMPLETE_FILE = "anygpt_complete.json"
LATEST_FILE = "latest"  # DeepSpeed's pointer to the newest tag; we only ever point it at a complete one
_TAG = re.compile(r"^step(\d{8})$")


def tag_for(step: int) -> str:
    return f"step{step:08d}"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def file_crc32(path: str | os.PathLike, chunk: int = 1 << 22) -> int:
    """CRC-32 of a file's bytes (about 1 GB/s: cheap next to writing the checkpoint)."""
    crc = 0
    with open(path, "rb") as f:
        while b := f.read(chunk):
            crc = zlib.crc32(b, crc)
    return crc


def _problem(tag_dir: str | os.PathLike, checksums: bool) -> str | None:
    """Why ``tag_dir`` cannot be trusted (None when it can): no or unreadable completion record,
    a listed file missing, empty, of another size than recorded, or (``checksums``) with other bytes."""
    d = Path(tag_dir)
    try:
        record = json.loads((d / COMPLETE_FILE).read_text())
        files = record["files"]
    except FileNotFoundError:
        return f"no {COMPLETE_FILE} (the save did not finish)"
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError, OSError) as e:
        return f"unreadable {COMPLETE_FILE} ({type(e).__name__})"
    sizes, crcs = record.get("sizes", {}), record.get("crc32", {})
    for f in files:
        p = d / f
        if not p.is_file():
            return f"{f} is missing"
        size = p.stat().st_size
        if size == 0 or (f in sizes and size != sizes[f]):
            return f"{f} is {size} bytes, the record says {sizes.get(f, 'non-empty')} (truncated?)"
        if checksums and f in crcs and file_crc32(p) != crcs[f]:
            return f"{f} does not match its recorded CRC-32 (corrupted on disk)"
    return None


def is_complete(tag_dir: str | os.PathLike) -> bool:
    """True when the completion record exists and every file it lists is present, non-empty and
    of the recorded size (cheap: no file is read)."""
    return _problem(tag_dir, checksums=False) is None


def verify(tag_dir: str | os.PathLike) -> str | None:
    """Full check before resuming: :func:`is_complete` plus every file's CRC-32. Returns the
    reason the tag is bad, or None when it is good."""
    return _problem(tag_dir, checksums=True)


def list_tags(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, dir)`` of every tag dir, newest first (complete or not)."""
    p = Path(ckpt_dir)
    if not p.is_dir():
        return []
    out = [(int(m.group(1)), d) for d in p.iterdir() if d.is_dir() and (m := _TAG.match(d.name))]
    return sorted(out, reverse=True)


def latest_complete(ckpt_dir: str | os.PathLike, report=None) -> Path | None:
    """The newest tag dir that passes :func:`verify`; each newer bad one is reported
    (``report(message)``, default: a logged warning) and skipped."""
    report = report or log.warning
    for _, d in list_tags(ckpt_dir):
        problem = verify(d)
        if problem is None:
            return d
        report(f"checkpoint {d} skipped: {problem}")
    return None


def save(engine, ckpt_dir: str | os.PathLike, step: int, loader_state: dict, keep_last: int) -> Path:
    """Collective: every rank calls it. Returns the tag dir."""
    rank = dist.get_rank()
    tag = tag_for(step)
    tag_dir = Path(ckpt_dir) / tag
    if rank == 0 and tag_dir.exists():  # a leftover from a killed save of the same step
        shutil.rmtree(tag_dir)
    dist.barrier()
    try:
        # save_latest=False: DeepSpeed writes ``latest`` in place before our files exist; we point it at
        # the tag ourselves, atomically, once the tag is complete (zero_to_fp32 and friends read it).
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"step": step, "loader": loader_state},
                               save_latest=False)
        torch.save({"step": step, "loader": loader_state, "rng": rng_state()}, tag_dir / f"anygpt_rank{rank}.pt")
    except BaseException:
        # disk full / I/O error: leave no half-written tag behind (it would never be trusted, but it
        # holds disk space and confuses people). Other ranks fail at their next collective.
        shutil.rmtree(tag_dir, ignore_errors=True)
        raise
    dist.barrier()  # every rank's files are on disk
    if rank == 0:
        try:
            write_record(tag_dir, step, dist.get_world_size())
        except BaseException:
            shutil.rmtree(tag_dir, ignore_errors=True)
            raise
        atomic_write_text(Path(ckpt_dir) / LATEST_FILE, tag)
        prune(ckpt_dir, keep_last)
    dist.barrier()
    return tag_dir


def write_record(tag_dir: Path, step: int, world_size: int) -> None:
    """The completion record: every file of the tag with its size and CRC-32, written last and atomically."""
    files = sorted(str(f.relative_to(tag_dir)) for f in tag_dir.rglob("*") if f.is_file() and f.name != COMPLETE_FILE)
    record = {"step": step, "world_size": world_size, "files": files,
              "sizes": {f: (tag_dir / f).stat().st_size for f in files},
              "crc32": {f: file_crc32(tag_dir / f) for f in files}}
    atomic_write_text(tag_dir / COMPLETE_FILE, json.dumps(record))


def prune(ckpt_dir: str | os.PathLike, keep_last: int) -> None:
    """Keep the newest ``keep_last`` complete tags; delete older tags (complete or broken)."""
    tags = list_tags(ckpt_dir)
    complete = [s for s, d in tags if is_complete(d)]
    if len(complete) <= keep_last or keep_last <= 0:
        return
    cutoff = complete[keep_last - 1]
    for s, d in tags:
        if s < cutoff:
            shutil.rmtree(d, ignore_errors=True)


def resolve_resume(resume: str, ckpt_dir: str | os.PathLike) -> Path | None:
    """``auto`` → newest complete tag (or None); ``none`` → None; a path → that tag, if complete."""
    if resume in ("none", "", None):
        return None
    if resume == "auto":
        return latest_complete(ckpt_dir)
    p = Path(resume)
    problem = verify(p)
    if problem is not None:
        raise ValueError(f"{p}: not a complete checkpoint: {problem}")
    return p


def load(engine, tag_dir: Path) -> dict:
    """Collective: restore engine, optimizer and scheduler; returns this rank's ``{step, loader, rng}``."""
    rank = dist.get_rank()
    record = json.loads((tag_dir / COMPLETE_FILE).read_text())
    if record["world_size"] != dist.get_world_size():
        raise ValueError(f"{tag_dir}: saved with {record['world_size']} ranks, this run has {dist.get_world_size()}")
    path, _ = engine.load_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    if path is None:
        raise ValueError(f"{tag_dir}: DeepSpeed could not load this checkpoint")
    state = torch.load(tag_dir / f"anygpt_rank{rank}.pt", weights_only=False)
    set_rng_state(state["rng"])
    return state


def full_weights(tag_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The full fp32 model weights of a checkpoint tag (any ZeRO stage), on CPU."""
    tag_dir = Path(tag_dir)
    if not is_complete(tag_dir):
        raise ValueError(f"{tag_dir}: not a complete checkpoint (no {COMPLETE_FILE} or files missing)")
    if any(tag_dir.glob("*optim_states.pt")) and (any(tag_dir.glob("zero_pp_rank_*_model_states.pt")) or
                                                 any(tag_dir.glob("zero_pp_rank_*optim_states.pt"))):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return dict(get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name))
    return torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)["module"]
