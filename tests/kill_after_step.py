"""Run ``anygpt`` and SIGKILL rank 0 right after training step N, for the kill / resume tests.

    python tests/kill_after_step.py N train --config RECIPE [key=value ...]
    torchrun --nproc_per_node 2 tests/kill_after_step.py N train --config RECIPE

Exact where a kill from outside is not: the training loop asks
:meth:`anygpt.train.stop.StopWatch.should_stop` once per optimizer step, after that step's metrics
line and checkpoint; its N-th call on rank 0 kills the process before the ranks agree. The count
starts at the process's first step, so use it on a fresh run (not a resumed one). The loop itself
carries no test hook.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

SCRIPT = Path(__file__).resolve()


def kill_after(step: int) -> None:
    """Make this process SIGKILL itself (on rank 0) at the ``step``-th stop check."""
    from anygpt.train.stop import StopWatch

    real = StopWatch.should_stop
    calls = 0

    def should_stop(self: StopWatch) -> bool:
        nonlocal calls
        calls += 1
        if calls == step and int(os.environ.get("RANK", "0")) == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self)

    StopWatch.should_stop = should_stop  # type: ignore[method-assign]


def killing(cmd: Sequence[str], step: int) -> list[str]:
    """``cmd`` (``… -m anygpt.cli train …``, plain or from ``launch_command``) run through this
    script, so that rank 0 dies after ``step``."""
    cmd = list(cmd)
    i = cmd.index("anygpt.cli")
    if cmd[i - 1] != "-m":
        raise ValueError(f"expected '-m anygpt.cli' in {cmd}")
    return cmd[:i - 1] + [str(SCRIPT), str(step)] + cmd[i + 1:]


if __name__ == "__main__":
    kill_after(int(sys.argv[1]))
    from anygpt.cli import main

    sys.exit(main(sys.argv[2:]))
