"""Start ``anygpt train`` as several processes from Python (torchrun or the deepspeed launcher).

``launch("train/tiny.yaml", ["steps=20"], nproc=2)`` runs
``python -m torch.distributed.run --nproc_per_node 2 -m anygpt.cli train --config … steps=20`` with
one thread per rank, gloo on CPU, and the ranks importing the same ``anygpt`` as this process (a
source checkout's or an installed one); it returns the finished process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Sequence

import anygpt
from anygpt.train.distributed import free_port

# the folder holding the imported ``anygpt`` package: put first on the ranks' PYTHONPATH, so a
# checkout run with PYTHONPATH (or a worktree) does not start ranks on another installed copy; an
# installed package is found by the ranks' interpreter anyway (site-packages must not go before stdlib)
PACKAGE_PARENT = Path(anygpt.__file__).resolve().parents[1]
_INSTALLED = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}


def launch_command(config_path: str | os.PathLike, overrides: Sequence[str] = (), nproc: int = 2, nnodes: int = 1,
                   node_rank: int = 0, master_addr: str = "127.0.0.1", master_port: int | None = None,
                   launcher: str = "torchrun") -> list[str]:
    """The argv that starts one node's ranks of ``anygpt train``."""
    train = ["-m", "anygpt.cli", "train", "--config", str(config_path), *overrides]
    port = str(master_port or free_port())
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--nnodes", str(nnodes),
                "--node_rank", str(node_rank), "--master_addr", master_addr, "--master_port", port, *train]
    if launcher == "deepspeed":
        if nnodes != 1:
            raise ValueError("multi-node with the deepspeed launcher uses a hostfile; see train/README.md")
        return [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc), "--master_port", port,
                "--module", *train[1:]]
    raise ValueError(f"launcher must be torchrun or deepspeed, got {launcher!r}")


def launch_env(**extra: str) -> dict[str, str]:
    """This process's environment for the ranks: ``anygpt`` importable as here, one thread per rank
    unless set, plus ``extra``."""
    env = dict(os.environ)
    first = "" if PACKAGE_PARENT in _INSTALLED else str(PACKAGE_PARENT)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (first, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra)
    return env


def launch(config_path: str | os.PathLike, overrides: Sequence[str] = (), nproc: int = 2, launcher: str = "torchrun",
           timeout: float | None = None, capture: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a multi-process training to completion in the current directory; check ``returncode``
    (output in stdout/stderr)."""
    cmd = launch_command(config_path, overrides, nproc, launcher=launcher, **kw)
    return subprocess.run(cmd, env=launch_env(), capture_output=capture, text=True, timeout=timeout)
