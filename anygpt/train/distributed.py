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


# glibc's M_MMAP_THRESHOLD (mallopt parameter -3) and the size we fix it at
M_MMAP_THRESHOLD, HOST_MMAP_THRESHOLD = -3, 256 * 1024


def return_freed_host_memory() -> bool:
    """Fix glibc's mmap threshold so host tensors past 256 KiB are mapped on their own and go back
    to the system when freed. Left dynamic, glibc raises the threshold to 32 MiB after the first
    large free; a training step's 1-32 MiB tensors (gathered ZeRO-3 parameters, gradient buckets,
    activations) then come from the heap, whose freed pieces stay resident: on CPU the peak RSS
    crept up step after step. False where the C library is not glibc (nothing changed)."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, HOST_MMAP_THRESHOLD))


def init_distributed() -> tuple[int, int, torch.device]:
    """Initialise (once) and return ``(rank, world_size, device)``; on CPU also
    :func:`return_freed_host_memory`."""
    set_single_process_env()
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        return_freed_host_memory()
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
