"""Process-group setup that works under ``deepspeed``, ``torchrun`` or one plain process.

Without a launcher the env vars DeepSpeed needs are filled in (world size 1), otherwise
``init_distributed`` would try MPI discovery. On CPU the backend is gloo, and DeepSpeed's
shared-memory collective op (a ~25 s g++ JIT build on a fresh machine, not needed with gloo) is
skipped.
"""

from __future__ import annotations

import os
import socket
import sys

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_single_process_env() -> None:
    """RANK/LOCAL_RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT defaults for a run with no launcher."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def skip_shm_comm_build() -> None:
    """Make DeepSpeed's CPU accelerator use plain gloo without compiling its shm op."""
    import deepspeed.comm.torch  # noqa: F401  (load the module so sys.modules has it)

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


def init_distributed() -> tuple[int, int, torch.device]:
    """Initialise (once) and return ``(rank, world_size, device)``."""
    set_single_process_env()
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        if not torch.cuda.is_available():
            skip_shm_comm_build()
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def shutdown() -> None:
    """End of a launched run: every rank waits for the others, then the group is torn down."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
