"""Keep freed host memory in the process for reuse, instead of handing it back to the OS after every layer.

glibc serves blocks over 32 MiB (most FCN activations at 500x500: conv1_2's output alone is 125 MB) with
mmap and returns them with munmap on free, so every forward page-faults its activations in afresh: about
190,000 faults and 15% of an FCN-8s forward on two CPU cores (BENCHMARKS.md). OpenCV DNN avoids this by
allocating its blobs once; CUDA frameworks by a caching allocator. The runner's tensors come and go with
each layer, so the process allocator is told to keep what it frees: no mmap, no trimming of the heap.

The setting is process-wide and has a price: the resident size never shrinks, and torch's aligned
allocations leave some freed blocks just too small for the next request of the same size, so the heap first
grows by a few activations' worth before every forward is served from memory it already holds
(tests/test_host_memory.py). The ``fcn`` commands, the solve scripts and ``make bench`` switch it on; a
library user opts in by calling ``keep_freed_memory()``.
"""
from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: The largest int mallopt takes: free memory at the top of the heap is never trimmed below this.
_NEVER_TRIM = 2**31 - 1

_kept = False


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every block from its heap and never trim it; True once that is in
    effect, False where the C library is not glibc (nothing is changed there)."""
    global _kept
    if _kept:
        return True
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _kept


def freed_memory_kept() -> bool:
    """Whether ``keep_freed_memory`` is in effect in this process."""
    return _kept
