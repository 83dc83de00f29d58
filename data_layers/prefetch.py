"""Loading samples on background threads, ahead of the net, and measuring how long the net still waited.

``depth`` samples are kept in flight on ``workers`` threads: decoding (PIL, zlib and numpy release the
GIL) overlaps the net's forward/backward, memory stays bounded, and results come out in exactly the
order the keys were drawn, whatever thread finished first. With ``depth`` 0 nothing is read ahead, but
the one read still runs on a worker thread: the main thread only waits for it, in short slices that
honour a stop request (``runner.interrupt``). A read from a stalled file system (a hung network mount,
a FIFO nobody writes) then costs a thread, not the run: Ctrl-C abandons it, naming the file.

The threads are daemons that hold the loader only weakly, so a stuck one never keeps the process from
exiting and a layer that is dropped takes its threads with it; ``close`` (also run at exit) stops them.
"""
import atexit
import inspect
import queue
import threading
import weakref
from collections import deque
from concurrent.futures import Future
from time import perf_counter
from typing import Any, Callable, Deque, Generic, Iterator, List, Optional, Tuple, TypeVar

from runner import interrupt

T = TypeVar("T")

#: How long ``close`` waits, in all, for threads to finish the read they are on.
CLOSE_SECONDS = 0.25

_open: "weakref.WeakSet[Prefetcher]" = weakref.WeakSet()


def _weak(load: Callable[[str], T]) -> Callable[[], Optional[Callable[[str], T]]]:
    """A way back to ``load`` that does not keep its object (the data layer) alive."""
    if inspect.ismethod(load):
        return weakref.WeakMethod(load)
    return lambda: load


def _work(tasks: "queue.SimpleQueue[Any]", loader: Callable[[], Optional[Callable[[str], Any]]]) -> None:
    """A worker thread: load each queued key into its future until told to stop (None) or orphaned."""
    while True:
        task = tasks.get()
        if task is None:
            return
        key, future = task
        if not future.set_running_or_notify_cancel():
            continue
        load = loader()
        if load is None:  # the layer is gone
            future.cancel()
            return
        try:
            future.set_result(load(key))
        except BaseException as err:  # the consumer re-raises it for this key
            future.set_exception(err)
        del load


def _stop(tasks: "queue.SimpleQueue[Any]", threads: List[threading.Thread],
          pending: "Deque[Tuple[str, Future]]") -> None:
    """Cancel what is queued, tell each thread to end, and give busy ones ``CLOSE_SECONDS`` in all."""
    for _, future in pending:
        future.cancel()
    pending.clear()
    for _ in threads:
        tasks.put(None)
    deadline = perf_counter() + CLOSE_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - perf_counter()))
    threads.clear()


class Prefetcher(Generic[T]):
    """Yields ``(key, load(key))`` for keys from ``keys``; ``wait_seconds`` sums the time ``next`` blocked.

    ``describe(key)`` says what a stalled load of ``key`` is reading, for the message when it is abandoned.
    """

    def __init__(self, load: Callable[[str], T], keys: Iterator[str], depth: int, workers: int,
                 describe: Optional[Callable[[str], str]] = None) -> None:
        if depth < 0 or workers < 1:
            raise ValueError(f"need depth >= 0 and workers >= 1, got depth={depth}, workers={workers}")
        self._keys = keys
        self.depth = depth
        self.wait_seconds = 0.0
        self._describe = describe or (lambda key: f"the load of {key!r}")
        self._loader = _weak(load)
        self._tasks: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._threads: List[threading.Thread] = []
        self._thread_count = min(workers, max(depth, 1))
        self._pending: Deque[Tuple[str, Future]] = deque()
        self._closer = weakref.finalize(self, _stop, self._tasks, self._threads, self._pending)
        _open.add(self)
        self._top_up()

    def _submit(self, key: str) -> None:
        if len(self._threads) < self._thread_count:
            thread = threading.Thread(target=_work, args=(self._tasks, self._loader), daemon=True,
                                      name=f"data-prefetch-{len(self._threads)}")
            thread.start()
            self._threads.append(thread)
        future: Future = Future()
        self._pending.append((key, future))
        self._tasks.put((key, future))

    def _top_up(self) -> None:
        while len(self._pending) < self.depth:
            self._submit(next(self._keys))

    def next(self) -> Tuple[str, T]:
        """The next key and its loaded value; a load's exception is raised here, for that key. A stop
        request while waiting raises ``runner.interrupt.Interrupted``, and the key stays next."""
        start = perf_counter()
        try:
            if not self._pending:
                self._submit(next(self._keys))
            key, future = self._pending.popleft()
            self._top_up()
            try:
                return key, interrupt.result(future, lambda: self._describe(key))
            except interrupt.Interrupted:
                self._pending.appendleft((key, future))
                raise
        finally:
            self.wait_seconds += perf_counter() - start

    def close(self) -> None:
        """Stop the threads now (also done when the prefetcher is garbage collected, and at exit)."""
        self._closer()


@atexit.register
def _close_all() -> None:
    """Stop every prefetcher's threads before the interpreter tears down the modules they use."""
    for prefetcher in list(_open):
        prefetcher.close()
