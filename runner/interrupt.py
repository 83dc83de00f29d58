"""Stop requests: how SIGINT/SIGTERM reach a training run that may be waiting on anything.

A signal handler in Python only sets a flag; PEP 475 then retries the interrupted system call, so a
main thread blocked in a read (an image on a stalled network mount, a FIFO nobody writes) never sees
the flag. Hence the rules this module provides:

* waits we own (a data layer's prefetch queue) poll the flag every ``POLL_SECONDS``
  (``result``) and give up with ``Interrupted``, naming what they were waiting for;
  long loops (scoring, one image at a time) call ``check``;
* ``stop_on_signals`` installs the handlers for a run: the first signal requests a stop and, if the
  run has not acknowledged it within ``ANSWER_SECONDS`` (it is stuck in code we do not own, such as
  a Python layer reading in the main thread), re-sends it to the main thread, whose handler then
  raises ``Interrupted`` right there, as does a second signal from the user;
* ``critical()`` (the weight update) is never cut by that raise: it is deferred to the section's end,
  so a snapshot never holds half-updated weights; ``finishing()`` (a snapshot being written) is not
  cut by the timer, only by a second signal, since the user then asked twice;
* ``exit_for_signal`` lets a command leave at once once the run has stopped and written its snapshot.

``Interrupted`` derives from BaseException, like KeyboardInterrupt, so that ``except Exception``
clauses on the way (layer wrappers, decoders) do not swallow it.
"""
from __future__ import annotations

import contextlib
import logging
import os
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
    """The process's stop request; the handler runs in the main thread, the timer in its own."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.acknowledged = False
        self.critical = 0
        self.finishing = 0
        self.deferred: Optional[Interrupted] = None
        self.escalating = False
        self.timer: Optional[threading.Timer] = None


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
    """The run is stopping on its own (snapshot, then exit): no more interrupting it from the timer."""
    _state.acknowledged = True
    if _state.timer is not None:
        _state.timer.cancel()


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


def _escalate(main_thread: int) -> None:
    """Timer thread: the stop went unanswered; interrupt the main thread's system call with the signal."""
    if _state.signum is None or _state.acknowledged or _state.finishing:
        return
    _state.escalating = True
    signal.pthread_kill(main_thread, _state.signum)


def _on_signal(signum: int, _frame: object) -> None:
    if _state.signum is None:
        _state.signum = signum
        _state.timer = threading.Timer(ANSWER_SECONDS, _escalate, (threading.main_thread().ident,))
        _state.timer.daemon = True
        _state.timer.start()
        return
    from_timer, _state.escalating = _state.escalating, False
    if from_timer and (_state.acknowledged or _state.finishing):
        return  # the run got to its stop on its own in the meantime
    if from_timer:
        message = f"{signal.Signals(signum).name} not answered within {ANSWER_SECONDS:g} s: interrupted"
    else:
        message = f"second signal ({signal.Signals(signum).name}): stopping at once, without a snapshot"
    stop = Interrupted(message, _state.signum, hard=not from_timer)
    if _state.critical:
        _state.deferred = stop
        return
    raise stop


def _reset() -> None:
    global _state
    if _state.timer is not None:
        _state.timer.cancel()
    _state = _State()


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
    """SIGINT and SIGTERM request a stop while inside (see the module docstring); the previous handlers
    and a clear flag are back on exit. Outside the main thread, where Python cannot install handlers,
    nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _reset()
    previous = {sig: signal.signal(sig, _on_signal) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _reset()
