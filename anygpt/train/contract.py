"""What a resumed run depends on, and the checks that run before any training work.

**The resume contract.** A checkpoint is only meaningful with the settings that made it: the
model, the optimizer and its schedule, the batch layout and the exact data the saved loader
position counts through. A fresh run writes ``OUT/run_contract.json``: the resolved config
(flattened to dotted keys), the world size and a fingerprint of every training dataset. A run
that would resume from a checkpoint in ``OUT`` compares itself with that file first, before
``config.yaml`` is rewritten or anything is built:

- a change of a key in :data:`SAFE_ON_RESUME` (more steps, logging, checkpoint cadence, export
  and validation settings) is accepted, printed, appended to ``OUT/resume_changes.jsonl`` and
  written into the contract; a change of ``steps`` also says how the cosine schedule moves;
- any other difference (``optim.lr``, ``deepspeed.micro_batch_size``, ``data.seq_len``,
  ``data.pack``, a model dimension, the world size, a dataset's content…) is refused with the
  list of differences and the two ways out (the old value, or a new ``out_dir`` /
  ``checkpoint.resume=none``).

A resumed run also drops the lines of ``metrics.jsonl`` past the checkpoint's step (the killed
run logged them; the resumed run logs them again), so each step appears once.

**Preflight** (:func:`preflight`): an empty training set, a set in which every label is -100
(nothing to learn) and ``data.seq_len`` beyond the model's positions are each one line before the
engine starts.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable

from anygpt.utils import append_jsonl, atomic_write_text

CONTRACT_FILE = "run_contract.json"
CHANGES_FILE = "resume_changes.jsonl"
IGNORE_LABEL = -100

# Keys whose change does not alter what a checkpoint means: prefixes end with a dot.
SAFE_ON_RESUME = ("steps", "log.", "checkpoint.every", "checkpoint.keep_last", "checkpoint.resume", "export.",
                  "data.val", "data.prefetch", "out_dir")
FINGERPRINT_BYTES = 1 << 20  # bytes hashed at each end of every dataset file


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists stay values."""
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def dataset_fingerprint(path: str | os.PathLike) -> str:
    """A cheap content fingerprint of a ``save_to_disk`` folder: every file's name and size, and a
    CRC-32 of its first and last MiB (a rebuilt set differs there; the whole file is not read)."""
    root = Path(path)
    crc = 0
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        size = f.stat().st_size
        crc = zlib.crc32(f"{f.relative_to(root)}:{size}".encode(), crc)
        with open(f, "rb") as fh:
            crc = zlib.crc32(fh.read(FINGERPRINT_BYTES), crc)
            if size > 2 * FINGERPRINT_BYTES:
                fh.seek(size - FINGERPRINT_BYTES)
                crc = zlib.crc32(fh.read(), crc)
    return f"{crc:08x}"


def make_contract(cfg: Any, world_size: int) -> dict[str, Any]:
    """The contract of ``cfg`` (a :class:`~anygpt.train.config.TrainConfig`) at ``world_size``."""
    return {"config": flatten(cfg.to_dict()), "world_size": world_size,
            "data": {str(p): dataset_fingerprint(p) for p in cfg.data.train if Path(p).is_dir()}}


def _is_safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) or key.startswith(s + ".") for s in SAFE_ON_RESUME)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every setting, the world size and each dataset that differ."""
    out = []
    oc, nc = old.get("config", {}), new.get("config", {})
    for k in sorted(set(oc) | set(nc)):
        if oc.get(k) != nc.get(k):
            out.append((k, oc.get(k), nc.get(k)))
    if old.get("world_size") != new.get("world_size"):
        out.append(("world_size", old.get("world_size"), new.get("world_size")))
    od, nd = old.get("data", {}), new.get("data", {})
    for p in sorted(set(od) | set(nd)):
        if p in od and p in nd and od[p] != nd[p]:
            out.append((f"data content of {p}", f"fingerprint {od[p]}", f"fingerprint {nd[p]}"))
    return out


def resumable_checkpoint(cfg: Any, out_dir: Path) -> bool:
    """Whether this run would resume from a checkpoint (without verifying its files: that is
    done once, later, by :func:`anygpt.train.checkpoint.resolve_resume`)."""
    from anygpt.train.checkpoint import COMPLETE_FILE

    resume = cfg.checkpoint.resume
    if resume in ("none", "", None):
        return False
    if resume != "auto":
        return True
    return any((out_dir / "checkpoints").glob(f"*/{COMPLETE_FILE}"))


def check_resume(cfg: Any, out_dir: Path, world_size: int, schedule: Callable[[Any], Callable[[int], float]],
                 rank: int = 0) -> list[str]:
    """Compare this run with ``OUT/run_contract.json`` when it resumes (see the module docstring).

    Raises ``ValueError`` listing the unsafe differences. Returns the accepted changes as
    printable lines (also recorded by rank 0); writes the contract of a run that starts fresh.
    ``schedule(cfg)`` is the lr multiplier, used to say how a change of ``steps`` moves it."""
    path = out_dir / CONTRACT_FILE
    new = make_contract(cfg, world_size)
    if not resumable_checkpoint(cfg, out_dir) or not path.exists():
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps(new, indent=1, sort_keys=True))
        return []
    old = json.loads(path.read_text(encoding="utf-8"))
    diff = differences(old, new)
    unsafe = [d for d in diff if not _is_safe(d[0])]
    if unsafe:
        listed = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in unsafe)
        raise ValueError(f"{out_dir}: resuming needs the settings its checkpoints were made with; changed: {listed}. "
                         f"Restore them, or start a new run (another out_dir, or checkpoint.resume=none)")
    lines = [f"resume: {k} changed {_short(a)} -> {_short(b)} (safe: accepted)" for k, a, b in diff]
    lines += _schedule_note(old["config"], cfg, schedule, out_dir)
    if rank == 0 and diff:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for k, a, b in diff:
            append_jsonl(out_dir / CHANGES_FILE, {"time": when, "key": k, "old": a, "new": b})
        atomic_write_text(path, json.dumps(new, indent=1, sort_keys=True))
    return lines


def _schedule_note(old_cfg: dict[str, Any], cfg: Any, schedule: Callable, out_dir: Path) -> list[str]:
    """For a change of ``steps``: the lr multiplier at the newest checkpoint, before and after."""
    if old_cfg.get("steps") == cfg.steps:
        return []
    import copy

    step = _newest_step(out_dir)
    if step is None:
        return []
    before = copy.deepcopy(cfg)
    before.steps = int(old_cfg["steps"])
    a, b = schedule(before)(step), schedule(cfg)(step)
    return [f"resume: the cosine schedule now ends at step {cfg.steps}: lr at step {step} is "
            f"{a * cfg.optim.lr:.3g} -> {b * cfg.optim.lr:.3g}"]


def _newest_step(out_dir: Path) -> int | None:
    from anygpt.train.checkpoint import COMPLETE_FILE

    steps = []
    for rec in (out_dir / "checkpoints").glob(f"*/{COMPLETE_FILE}"):
        try:
            steps.append(int(json.loads(rec.read_text())["step"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(steps) if steps else None


def _short(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 60 else s[:57] + "..."


def trim_metrics(out_dir: Path, step: int) -> int:
    """Drop ``metrics.jsonl`` lines past ``step`` (logged by the run that was killed after its
    last checkpoint; the resumed run logs those steps again). Returns how many were dropped."""
    path = out_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            past = int(json.loads(line).get("step", 0)) > step
        except (ValueError, AttributeError, TypeError):
            past = False  # a torn last line from the kill: keep what cannot be read as it is
            if not line.strip():
                continue
        if past:
            dropped += 1
        else:
            keep.append(line)
    if dropped:
        atomic_write_text(path, "".join(x + "\n" for x in keep))
    return dropped


def preflight(cfg: Any, model: Any, datasets: Iterable[tuple[str, Any]]) -> None:
    """One ``ValueError`` line for a run that cannot learn: an empty training set, a set whose
    labels are all -100, or ``data.seq_len`` beyond the model's positions."""
    import pyarrow.compute as pc

    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and cfg.data.seq_len > positions:
        raise ValueError(f"data.seq_len {cfg.data.seq_len} is longer than the model's {positions} positions "
                         f"(max_position_embeddings); set data.seq_len={positions} or less")
    for path, ds in datasets:
        if len(ds) == 0:
            raise ValueError(f"{path}: the training set has no samples; rebuild it (anygpt build-data) or drop it from data.train")
        labels = pc.list_flatten(ds.data.column("labels"))
        if len(labels) == 0 or not pc.any(pc.not_equal(labels, IGNORE_LABEL)).as_py():
            raise ValueError(f"{path}: every label is {IGNORE_LABEL}, so there is nothing to learn; "
                             "rebuild it with loss on the responses (labels = the target ids)")

