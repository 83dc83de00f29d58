"""Loading samples ahead of the net on background threads, and measuring how long the net still waited.

A bounded queue of futures keeps ``depth`` samples in flight on a thread pool: decoding (PIL, zlib and
numpy release the GIL) overlaps the net's forward/backward, memory stays bounded, and results come out in
exactly the order the keys were drawn, whatever thread finished first. ``depth`` 0 loads inline.
"""
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from time import perf_counter
from typing import Callable, Deque, Generic, Iterator, Optional, Tuple, TypeVar

T = TypeVar("T")


class Prefetcher(Generic[T]):
    """Yields ``(key, load(key))`` for keys from ``keys``; ``wait_seconds`` sums the time ``next`` blocked."""

    def __init__(self, load: Callable[[str], T], keys: Iterator[str], depth: int, workers: int) -> None:
        if depth < 0 or workers < 1:
            raise ValueError(f"need depth >= 0 and workers >= 1, got depth={depth}, workers={workers}")
        self._load = load
        self._keys = keys
        self.depth = depth
        self.wait_seconds = 0.0
        self._pending: Deque[Tuple[str, Future]] = deque()
        self._pool: Optional[ThreadPoolExecutor] = None
        if depth:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="data-prefetch")
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
            self._top_up()

    def _top_up(self) -> None:
        while len(self._pending) < self.depth:
            key = next(self._keys)
            self._pending.append((key, self._pool.submit(self._load, key)))

    def next(self) -> Tuple[str, T]:
        """The next key and its loaded value; a load's exception is raised here, for that key."""
        start = perf_counter()
        try:
            if self._pool is None:
                key = next(self._keys)
                return key, self._load(key)
            key, future = self._pending.popleft()
            self._top_up()
            return key, future.result()
        finally:
            self.wait_seconds += perf_counter() - start

    def close(self) -> None:
        """Stop the threads now (they also stop when the prefetcher is garbage collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pending.clear()
