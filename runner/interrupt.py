"""Stop requests: how SIGINT/SIGTERM reach a training run that may be waiting on anything.

A signal handler in Python only sets a flag; PEP 475 then retries the interrupted system call, so a
main thread blocked in a read (an image on a stalled network mount, a FIFO nobody writes) never sees
the flag. Worse, the kernel may deliver a process's signal to any of its threads (a prefetch worker,
a torch pool thread); the main thread, blocked in its read, is then not even interrupted, and the
Python handler never runs. Hence the rules this module provides:

* waits we own (a data layer's prefetch queue) poll the flag every ``POLL_SECONDS``
  (``result``) and give up with ``Interrupted``, naming what they were waiting for;
  long loops (scoring, one image at a time) call ``check``;
* ``stop_on_signals`` installs the handlers for a run, and a watchdog thread that hears of every
  SIGINT/SIGTERM whatever thread took it (CPython's signal wakeup fd): the first requests a stop; if
  the run has not acknowledged it within ``ANSWER_SECONDS`` (it is stuck in code we do not own, such
  as a Python layer reading in the main thread), the watchdog signals the main thread itself, whose
  handler then raises ``Interrupted`` right there, as it does at once on a second signal from the user;
* ``critical()`` (the weight update) is never cut by that raise: it is deferred to the section's end,
  so a snapshot never holds half-updated weights; ``finishing()`` (a snapshot being written) is not
  cut for being slow, only by a second signal, since the user then asked twice;
* ``exit_for_signal`` lets a command leave at once once the run has stopped and written its snapshot.

``Interrupted`` derives from BaseException, like KeyboardInterrupt, so that ``except Exception``
clauses on the way (layer wrappers, decoders) do not swallow it.
"""
from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import time
from concurrent.futures import Future
from typing import Callable, Iterator, Optional, TypeVar

T = TypeVar("T")

#: How often a wait we own looks at the stop flag.
POLL_SECONDS = 0.1
#: How long a stop request may go unanswered before the main thread is interrupted wherever it is.
ANSWER_SECONDS = 0.5
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop was requested (SIGINT/SIGTERM) and honoured here. ``hard``: the user signalled twice, so
    nothing more (no snapshot) should be attempted."""

    def __init__(self, message: str, signum: int, hard: bool = False) -> None:
        super().__init__(message)
        self.signum = signum
        self.hard = hard


class _State:
    """The process's stop request, shared by the main thread (handler, sections) and the watchdog."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.acknowledged = False
        self.critical = 0
        self.finishing = 0
        self.deferred: Optional[Interrupted] = None
        self.raise_now: Optional[Interrupted] = None   # what the main thread raises when the watchdog wakes it
        self.sent_by_watchdog = 0                       # its own signals, not to be counted as the user's


_state = _State()


def stop_requested() -> Optional[int]:
    """The signal that asked this process to stop, or None."""
    return _state.signum


def check(what: str) -> None:
    """Raise ``Interrupted`` saying ``what`` was cut short, if a stop was requested."""
    if _state.signum is not None:
        raise Interrupted(what, _state.signum)


def result(future: "Future[T]", describe: Callable[[], str]) -> T:
    """``future.result()``, waiting in short slices so that a stop request is honoured within
    ``POLL_SECONDS``: the wait is abandoned with ``Interrupted`` naming ``describe()``. The future is
    left as it is (a stalled read stays on its thread, which the process does not wait for)."""
    started = time.perf_counter()
    while True:
        try:
            return future.result(timeout=POLL_SECONDS)
        except TimeoutError:
            if _state.signum is not None:
                raise Interrupted(f"abandoned {describe()}: no data after {time.perf_counter() - started:.1f} s "
                                  f"(a stalled file system?)", _state.signum) from None


def acknowledge() -> None:
    """The run is stopping on its own (snapshot, then exit): no more interrupting it for being slow."""
    _state.acknowledged = True


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """A section that a forced stop must not cut in two (the weight update): the stop waits for its end."""
    _state.critical += 1
    try:
        yield
    finally:
        _state.critical -= 1
    if not _state.critical and _state.deferred is not None:
        deferred, _state.deferred = _state.deferred, None
        raise deferred


@contextlib.contextmanager
def finishing() -> Iterator[None]:
    """A section worth finishing after a stop request (a snapshot): only a second signal cuts it."""
    _state.finishing += 1
    try:
        yield
    finally:
        _state.finishing -= 1


def _on_signal(signum: int, _frame: object) -> None:
    """The Python-level handler, in the main thread: note the request; raise if the watchdog says so."""
    if _state.signum is None:
        _state.signum = signum
    stop, _state.raise_now = _state.raise_now, None
    if stop is None:
        return
    if _state.critical:
        _state.deferred = stop
        return
    raise stop


class _Watchdog:
    """Reads the signal numbers CPython's C-level handler writes to the wakeup fd, whatever thread the
    kernel delivered the signal to, and interrupts the main thread when the stop goes unanswered or the
    user signals a second time."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._main = threading.main_thread().ident
        self._closed = False
        self.previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        self._thread.start()

    def _interrupt_main(self, stop: Interrupted) -> None:
        _state.raise_now = stop
        _state.sent_by_watchdog += 1
        signal.pthread_kill(self._main, stop.signum)

    def _watch(self) -> None:
        received, deadline = 0, None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._read], [], [], timeout)
            if self._closed:
                return
            for signum in os.read(self._read, 64) if ready else b"":
                if signum not in SIGNALS:
                    continue
                if _state.sent_by_watchdog:
                    _state.sent_by_watchdog -= 1
                    continue
                received += 1
                if _state.signum is None:
                    _state.signum = signum
                if received == 1:
                    deadline = time.monotonic() + ANSWER_SECONDS
                else:
                    self._interrupt_main(Interrupted(f"second signal ({signal.Signals(signum).name}): stopping at "
                                                     f"once, without a snapshot", _state.signum, hard=True))
            if deadline is not None and time.monotonic() >= deadline:
                deadline = None
                if _state.finishing and not _state.acknowledged:  # a snapshot first; ask again after it
                    deadline = time.monotonic() + POLL_SECONDS
                elif not _state.acknowledged:
                    name = signal.Signals(_state.signum).name
                    self._interrupt_main(Interrupted(f"{name} not answered within {ANSWER_SECONDS:g} s: "
                                                     f"interrupted", _state.signum))

    def close(self) -> None:
        self._closed = True
        signal.set_wakeup_fd(self.previous_fd)
        os.write(self._write, b"\0")
        self._thread.join()
        os.close(self._read)
        os.close(self._write)


def exit_for_signal(status: int) -> int:
    """For a command's entry point: after a run stopped by a signal (``status`` 128 + signal, as a shell
    reports it), leave at once with that status, skipping the interpreter's teardown (torch's alone takes
    up to a second), which a user who pressed Ctrl-C should not wait for. Everything the run wrote is
    complete (atomic, fsynced) and the logs and consoles are flushed first. Other statuses are returned."""
    if status < 128:
        return status
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM request a stop while inside (see the module docstring); the previous handlers,
    wakeup fd and a clear flag are back on exit. Outside the main thread, where Python cannot install
    handlers, nothing is installed."""
    global _state
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state = _State()
    previous = {sig: signal.signal(sig, _on_signal) for sig in SIGNALS}
    watchdog = _Watchdog()
    try:
        yield
    finally:
        watchdog.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state = _State()
