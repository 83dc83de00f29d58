"""runner.host_memory in fresh processes (the setting is process-wide): with freed memory kept, repeated
allocations of an activation-sized tensor stop page-faulting once the heap has grown to hold them."""
import subprocess
import sys

import pytest

from runner import host_memory

# Allocates, fills and frees a 64 MiB tensor (over glibc's largest mmap threshold) 30 times; prints whether
# keep_freed_memory took effect and the minor page faults of the last 20 rounds. (torch's aligned
# allocations leave a few freed blocks just too small for the next one: the heap grows by a few blocks at
# first, then serves every round from memory it already has.)
PROGRAM = """
import resource, sys, torch
from runner.host_memory import keep_freed_memory, freed_memory_kept, release_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
assert freed_memory_kept() == kept
for _ in range(10):
    torch.ones(16 * 2**20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 * 2**20).sum()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
def resident():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) // 1024
held = resident()
release_freed_memory()
print(kept, faults, held, resident())
"""


def _faults(mode):
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True,
                         cwd=host_memory.__file__.rsplit("/runner/", 1)[0]).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2]), int(out[3])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_kept_freed_memory_is_reused_without_page_faults():
    kept, faults, held_mib, released_mib = _faults("keep")
    assert kept
    # 64 MiB in 4 KiB pages is 16384 faults a round, every round by default; kept, the heap may still grow
    # by a block once or twice after the warm-up (torch's aligned requests), then serves every round
    assert faults <= 2 * 16384
    assert held_mib - released_mib > 64  # release_freed_memory gave the kept blocks back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_by_default_a_freed_large_block_goes_back_to_the_os():
    kept, faults, _, _ = _faults("default")
    assert not kept
    assert faults > 0                   # munmap'ed and faulted in again (fewer faults with huge pages)
