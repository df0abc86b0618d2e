"""DeepSpeed checkpoints that survive a kill mid-save.

Each checkpoint is a DeepSpeed tag dir ``CKPT/step00000120/`` (model, optimizer, scheduler) plus
one ``anygpt_rank{r}.pt`` per rank (step, loader position, python/numpy/torch RNG). Only after
every rank has finished writing does rank 0 write ``anygpt_complete.json`` (atomic rename) listing
the files; a tag without it, or with a listed file missing, is never trusted. Resume (``auto``)
takes the newest complete tag; keep-last-N pruning only ever deletes older tags.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from anygpt.utils import atomic_write_text

COMPLETE_FILE = "anygpt_complete.json"
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


def is_complete(tag_dir: str | os.PathLike) -> bool:
    """True when the completion record exists and every file it lists is present and non-empty."""
    rec = Path(tag_dir) / COMPLETE_FILE
    try:
        files = json.loads(rec.read_text())["files"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False
    return all((Path(tag_dir) / f).is_file() and (Path(tag_dir) / f).stat().st_size > 0 for f in files)


def list_tags(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, dir)`` of every tag dir, newest first (complete or not)."""
    p = Path(ckpt_dir)
    if not p.is_dir():
        return []
    out = [(int(m.group(1)), d) for d in p.iterdir() if d.is_dir() and (m := _TAG.match(d.name))]
    return sorted(out, reverse=True)


def latest_complete(ckpt_dir: str | os.PathLike) -> Path | None:
    """The newest tag dir that is complete; incomplete newer ones are skipped."""
    for _, d in list_tags(ckpt_dir):
        if is_complete(d):
            return d
    return None


def save(engine, ckpt_dir: str | os.PathLike, step: int, loader_state: dict, keep_last: int) -> Path:
    """Collective: every rank calls it. Returns the tag dir."""
    rank = dist.get_rank()
    tag = tag_for(step)
    tag_dir = Path(ckpt_dir) / tag
    if rank == 0 and tag_dir.exists():  # a leftover from a killed save of the same step
        shutil.rmtree(tag_dir)
    dist.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"step": step, "loader": loader_state})
    torch.save({"step": step, "loader": loader_state, "rng": rng_state()}, tag_dir / f"anygpt_rank{rank}.pt")
    dist.barrier()  # every rank's files are on disk
    if rank == 0:
        files = sorted(str(f.relative_to(tag_dir)) for f in tag_dir.rglob("*") if f.is_file())
        atomic_write_text(tag_dir / COMPLETE_FILE, json.dumps({"step": step, "world_size": dist.get_world_size(), "files": files}))
        prune(ckpt_dir, keep_last)
    dist.barrier()
    return tag_dir


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
    if not is_complete(p):
        raise ValueError(f"{p}: not a complete checkpoint (no {COMPLETE_FILE} or files missing)")
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
    return torch.load(tag_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
