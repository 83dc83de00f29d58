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
library user opts in by calling ``keep_freed_memory()``, and ``release_freed_memory()`` gives the kept
memory back at a phase boundary (``make bench`` does so between its cases).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any, Optional

# mallopt parameters from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: The largest int mallopt takes: free memory at the top of the heap is never trimmed below this.
_NEVER_TRIM = 2**31 - 1

_kept = False


@functools.lru_cache(maxsize=None)
def _libc_function(name: str) -> Optional[Any]:
    """A function of the C library, or None where it has none of that name (not glibc)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every block from its heap and never trim it; True once that is in
    effect, False where the C library is not glibc (nothing is changed there)."""
    global _kept
    if _kept:
        return True
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _kept


def release_freed_memory() -> bool:
    """Hand the heap's free memory back to the OS now (glibc's ``malloc_trim``), e.g. between phases of a
    program that kept it: after training, before other processes need the room. True where glibc did so."""
    malloc_trim = _libc_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim.argtypes = (ctypes.c_size_t,)
    return bool(malloc_trim(0))


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33 and later): ten size_t counters; ``fordblks`` is the free heap."""
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def kept_free_bytes() -> Optional[int]:
    """Bytes the heap holds free for reuse (glibc's mallinfo2 ``fordblks``); None where unknown."""
    mallinfo2 = _libc_function("mallinfo2")
    if mallinfo2 is None:
        return None
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)


def release_freed_memory_beyond(limit_bytes: int) -> bool:
    """``release_freed_memory`` only when the kept free memory exceeds ``limit_bytes``: passes of varying
    sizes (pictures of every size) leave freed blocks that fit no later request, and the heap would grow
    without end; trimming at every pass would instead page-fault every activation in afresh."""
    free = kept_free_bytes()
    return free is not None and free > limit_bytes and release_freed_memory()


def freed_memory_kept() -> bool:
    """Whether ``keep_freed_memory`` is in effect in this process."""
    return _kept
