"""Stopping a training run cleanly: SIGTERM / SIGINT (Ctrl-C) on any rank, or its launcher gone.

A signal only sets a flag; the loop asks :meth:`StopWatch.should_stop` once per optimizer step,
and the ranks agree (one MAX all-reduce of a single number), so every rank stops after the same
step, saves the same checkpoint and leaves the process group together. No rank is left waiting in
a collective for one that has already exited.

A rank also stops when a launcher process above it has gone (``deepspeed`` / ``torchrun`` /
``anygpt.train.launch`` killed with SIGKILL, or exiting on SIGTERM without passing it on): the
launcher's pid is looked up once from ``/proc`` at start, so orphaned ranks do not train on and
keep writing checkpoints. A plain process (no launcher) has nothing to watch.

The handlers belong to the run: ``with StopWatch() as stop:`` (or a function decorated with
:func:`restores_signal_handlers`) puts the previous SIGTERM / SIGINT handlers back however the run
ends, a raised error included, so a process that trains in-process (a test, a notebook, a sweep)
gets its own Ctrl-C back.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

LAUNCHER_MARKERS = ("deepspeed", "torchrun", "torch.distributed.run", "torch/distributed/run", "anygpt.train.launch",
                    "anygpt/train/launch")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def launcher_pids(pid: int | None = None, depth: int = 6) -> list[int]:
    """Pids of the launcher processes above ``pid`` (default: this one), nearest first; empty on
    systems without ``/proc`` or for a plain process."""
    out, cur = [], pid or os.getpid()
    for _ in range(depth):
        parent = _parent(cur)
        if not parent or parent <= 1:
            break
        if any(m in _cmdline(parent) for m in LAUNCHER_MARKERS):
            out.append(parent)
        cur = parent
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed, not yet reaped) counts as gone
    status = Path(f"/proc/{pid}/status")
    try:
        return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status.read_text().splitlines())
    except OSError:
        return False


class StopWatch:
    """Collects stop requests; ``should_stop()`` is collective (call it on every rank, same step)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.signum: int | None = None
        self.launchers = launcher_pids()
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopWatch":
        """Route SIGTERM / SIGINT to this watch; :meth:`restore` (or leaving ``with``) undoes it."""
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread (a test harness): stop requests come only from launchers
                pass
        return self

    def restore(self) -> None:
        """Put back the handlers :meth:`install` replaced (idempotent)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __enter__(self) -> "StopWatch":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        self.signum = signum
        self.reason = signal.Signals(signum).name

    def local(self) -> bool:
        if self.reason is None:
            gone = [p for p in self.launchers if not _alive(p)]
            if gone:
                self.reason = f"launcher (pid {gone[0]}) gone"
                self.signum = signal.SIGTERM
        return self.reason is not None

    def should_stop(self) -> bool:
        """True on every rank when any rank was asked to stop (one all-reduce)."""
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.local() else 0.0])
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0 and self.reason is None:
            self.reason, self.signum = "another rank was stopped", signal.SIGTERM
        return flag.item() > 0

    @property
    def exit_code(self) -> int:
        """128 + the signal number, the shell's convention for a run ended by a signal."""
        return 128 + int(self.signum or signal.SIGTERM)


@contextmanager
def signal_handlers_restored() -> Iterator[None]:
    """The SIGTERM / SIGINT handlers on entry are the handlers on exit, however the block ends."""
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:  # None: set from C, not restorable from Python
                try:
                    signal.signal(sig, handler)
                except ValueError:  # not the main thread: nothing was installed here either
                    pass


def restores_signal_handlers(fn: F) -> F:
    """Decorator: run ``fn`` inside :func:`signal_handlers_restored` (for a training entry point
    whose StopWatch could be left installed by an error raised mid-run)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with signal_handlers_restored():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class TrainingStopped(SystemExit):
    """Raised after a clean stop (checkpoint saved); its code is 128 + the signal number."""
