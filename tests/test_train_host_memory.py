"""Training on CPU hands freed host tensors back to the system (glibc's mmap threshold fixed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Frees a 16 MiB tensor (glibc then serves anything smaller from its heap), then holds twenty 8 MiB
# tensors and frees all but the last; prints how much of the 152 MiB freed left the process's RSS.
PROBE = textwrap.dedent("""
    import sys, torch
    from anygpt.train.distributed import return_freed_host_memory
    if sys.argv[1] == "fixed":
        assert return_freed_host_memory()
    def rss():
        return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
    big = torch.ones(4 * 2**20); del big
    held = [torch.ones(2 * 2**20) for _ in range(20)]
    before = rss()
    del held[:-1]
    print(before - rss())
""")


def freed_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc are Linux's")
def test_freed_tensors_leave_the_rss():
    assert freed_mib("fixed") > 140  # 19 x 8 MiB = 152 MiB given back
    assert freed_mib("dynamic") < 20  # glibc's own threshold keeps them resident (what the fix is for)
