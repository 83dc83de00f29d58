"""Batches loaded ahead on one background thread, as Caffe's BasePrefetchingDataLayer does.

Reading and decoding the next batches (LMDB/LevelDB reads, OpenCV decoding and resizing release the GIL)
overlaps the net's forward and backward. One worker loads the batches one after another, so their order
and every random draw in them are exactly those of loading them inline; ``depth`` is the number of
batches in flight (Caffe's ``data_param.prefetch``, default 4; 0 loads inline).
"""
from __future__ import annotations

import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Deque, Generic, Optional, TypeVar

T = TypeVar("T")


class BatchPrefetcher(Generic[T]):
    """``next()`` gives ``load()``'s results in call order, with ``depth`` calls started ahead."""

    def __init__(self, load: Callable[[], T], depth: int, name: str) -> None:
        self._load = load
        self._depth = max(0, int(depth))
        self._pending: Deque[Future] = deque()
        self._pool: Optional[ThreadPoolExecutor] = None
        if self._depth:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"prefetch-{name}")
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)

    def next(self) -> T:
        """The next batch; a failure while loading it is raised here."""
        if self._pool is None:
            return self._load()
        while len(self._pending) <= self._depth:
            self._pending.append(self._pool.submit(self._load))
        return self._pending.popleft().result()
