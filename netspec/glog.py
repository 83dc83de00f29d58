"""Caffe's log lines, as Google's glog writes them, so that people and log parsers see what they know.

Caffe reports through glog: ``I1203 08:22:03.626994 21725 solver.cpp:239] Iteration 20 (...), loss = 0.693``
is severity (I, W, E, F), month and day, local time to the microsecond, the thread id right-aligned in
five columns, Caffe's source ``file:line``, and the message (its continuation lines are unprefixed, as
in the echoed prototxts). Tools such as Caffe's ``tools/extra/parse_log.py`` read exactly this, and
years of Caffe logs trained eyes on it; so every message Caffe prints is logged here with Caffe's text,
Caffe's number formatting (floats as a C++ ostream streams them: ``%g``, six significant digits, of
the float32 value) and the file:line of its LOG statement in BVLC Caffe master (9b89154).

The records travel through Python's ``logging`` on the logger named ``caffe`` (see ``info``/``warning``/
``error``), which has its own stderr handler and does not propagate: one line per message on stderr,
whatever the application did to its root logger. Send them elsewhere the Python way, e.g.
``logging.getLogger("caffe").handlers[:] = [my_handler]`` (``GlogFormatter`` formats for any handler).

Environment, read once at import as glog reads its flags at start-up:

* ``GLOG_minloglevel``: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL; lower severities are dropped.
* Before ``init_google_logging`` (pycaffe never calls glog's InitGoogleLogging unless the script calls
  ``caffe.init_log``), every kept line goes to stderr, as pycaffe's do.
* After it (command-line tools), stderr gets only lines at or above ``GLOG_stderrthreshold`` (default 2,
  ERROR) unless ``GLOG_logtostderr`` or ``GLOG_alsologtostderr`` is true (``1``, ``t``, ``y``), exactly
  glog's rule. Caffe's tools set alsologtostderr, and so do our upgrade tools; the ``fcn`` commands and
  the solve scripts do not, so their consoles show Caffe's INFO lines only with ``GLOG_logtostderr=1``.
* ``GLOG_log_dir`` is ignored: nothing here writes log files (pycaffe writes none either until a script
  calls ``init_log``). The lines glog would send only to its files are dropped; to keep a log, keep
  stderr (``GLOG_logtostderr=1 ... 2> log``), which is what parse_log.py is given anyway.
* ``GLOG_log_year_in_prefix`` (glog >= 0.6 prints ``I20261203 ...``): default false here, because
  parse_log.py takes the two characters after the severity for the month ("20") and stops on that.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from typing import Any, Iterator, Optional

import numpy as np

#: The logger every Caffe message goes through.
LOGGER_NAME = "caffe"
#: glog severities as logging levels.
INFO, WARNING, ERROR, FATAL = logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL
_SEVERITIES = (INFO, WARNING, ERROR, FATAL)


def env_bool(name: str, default: bool = False) -> bool:
    """glog's EnvToBool: set and empty, or starting with t, T, y, Y or 1, is true."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value == "" or value[0] in "tTyY1"


def env_int(name: str, default: int) -> int:
    """glog's EnvToInt (strtol): the leading integer of the value, 0 when there is none."""
    value = os.environ.get(name)
    if value is None:
        return default
    match = re.match(r"\s*[-+]?\d+", value)
    return int(match.group()) if match else 0


def severity_level(index: int) -> int:
    """A glog severity number (0 INFO ... 3 FATAL) as a logging level; above 3 hides everything."""
    if index < 0:
        return INFO
    return _SEVERITIES[index] if index < len(_SEVERITIES) else FATAL + 1


class GlogFormatter(logging.Formatter):
    """Formats a record as one glog line (``year``: glog 0.6's ``I20261203`` instead of ``I1203``).

    Records logged through this module carry Caffe's ``file:line``; any other record shows its own
    Python file and line, so the formatter serves a whole application if wanted."""

    def __init__(self, year: bool = False) -> None:
        super().__init__()
        self.year = year

    def format(self, record: logging.LogRecord) -> str:
        letter = "IIIWEF"[min(5, max(0, record.levelno // 10))]
        seconds, micros = divmod(round(record.created * 1e6), 1_000_000)
        stamp = time.localtime(seconds)
        date = time.strftime("%Y%m%d" if self.year else "%m%d", stamp)
        thread = getattr(record, "native_thread", None) or threading.get_native_id()
        where = getattr(record, "caffe_where", None) or f"{record.filename}:{record.lineno}"
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if message.endswith("\n"):  # glog adds a newline only where the message has none
            message = message[:-1]
        return f"{letter}{date} {time.strftime('%H:%M:%S', stamp)}.{micros:06d} {thread:5d} {where}] {message}"


class StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever ``sys.stderr`` is at the time of each line (pytest's capture, a
    redirect), which tqdm's ``logging_redirect_tqdm`` also recognises as console output (it keeps the
    formatter and filters of the handler it stands in for, so the stderr threshold is a filter)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """Ignored: the stream is always the current stderr."""


class _Flags:
    """glog's flags that matter here, from the environment, and whether InitGoogleLogging ran."""

    def __init__(self) -> None:
        self.minloglevel = env_int("GLOG_minloglevel", 0)
        self.stderrthreshold = env_int("GLOG_stderrthreshold", 2)
        self.logtostderr = env_bool("GLOG_logtostderr")
        self.alsologtostderr = env_bool("GLOG_alsologtostderr")
        self.year_in_prefix = env_bool("GLOG_log_year_in_prefix")
        self.initialized = False
        self.root_solver = True

    def stderr_level(self) -> int:
        """The lowest level stderr shows (glog: everything before init or with (also)logtostderr)."""
        if not self.initialized or self.logtostderr or self.alsologtostderr:
            return severity_level(self.minloglevel)
        return severity_level(max(self.minloglevel, self.stderrthreshold))


FLAGS = _Flags()
logger = logging.getLogger(LOGGER_NAME)
_handler = StderrHandler()
_handler.addFilter(lambda record: record.levelno >= FLAGS.stderr_level())


def _apply_flags() -> None:
    logger.setLevel(severity_level(FLAGS.minloglevel))
    _handler.setFormatter(GlogFormatter(year=FLAGS.year_in_prefix))


logger.addHandler(_handler)
logger.propagate = False
_apply_flags()


def init_google_logging(minloglevel: Optional[int] = None, logtostderr: Optional[bool] = None,
                        alsologtostderr: Optional[bool] = None) -> None:
    """glog's InitGoogleLogging after the given flag assignments (None keeps the environment's value):
    from now on stderr shows lines below GLOG_stderrthreshold only with logtostderr or alsologtostderr.
    Caffe's tools call it with ``alsologtostderr=True``; pycaffe's ``init_log(level, stderr)`` with
    ``minloglevel=level, logtostderr=stderr``."""
    if minloglevel is not None:
        FLAGS.minloglevel = int(minloglevel)
    if logtostderr is not None:
        FLAGS.logtostderr = bool(logtostderr)
    if alsologtostderr is not None:
        FLAGS.alsologtostderr = bool(alsologtostderr)
    FLAGS.initialized = True
    _apply_flags()


@contextlib.contextmanager
def google_logging(minloglevel: Optional[int] = None, logtostderr: Optional[bool] = None,
                   alsologtostderr: Optional[bool] = None) -> Iterator[None]:
    """``init_google_logging`` for the time of a command-line tool's ``main``, then glog as it was (a tool
    called in-process, by a test or a script, leaves the process's glog alone)."""
    saved = dict(vars(FLAGS))
    init_google_logging(minloglevel, logtostderr, alsologtostderr)
    try:
        yield
    finally:
        vars(FLAGS).update(saved)
        _apply_flags()


@contextlib.contextmanager
def held(records: list) -> Iterator[None]:
    """Keep the lines logged inside (appended to ``records``) instead of writing them, for code that runs
    before the point where Caffe logs the same lines (a data layer built in one step that Caffe sets up
    only after the net wired it); ``release(records)`` writes them there."""
    def hold(record: logging.LogRecord) -> bool:
        records.append(record)
        return False
    logger.addFilter(hold)
    try:
        yield
    finally:
        logger.removeFilter(hold)


def release(records: list) -> None:
    """Write the lines ``held`` kept, stamped now, and forget them."""
    for record in records:
        record.created = time.time()
        logger.handle(record)
    records.clear()


def info_on_stderr() -> bool:
    """Whether INFO lines reach stderr now: then a command prints Caffe's log, not a progress bar, so that
    stderr stays a clean glog log (a bar's carriage returns would glue lines together for parse_log.py)."""
    return enabled(INFO) and FLAGS.stderr_level() <= INFO


def set_root_solver(root: bool) -> None:
    """Caffe::set_root_solver: in data-parallel training only the root solver's process logs INFO lines
    (Caffe's ``LOG_IF(INFO, Caffe::root_solver())``), so a log has one copy of each, as parsers expect."""
    FLAGS.root_solver = bool(root)


def enabled(level: int = INFO) -> bool:
    """Whether a line of this level is logged at all: skip building costly messages when it is not."""
    return (level > INFO or FLAGS.root_solver) and logger.isEnabledFor(level)


def log(level: int, where: str, message: str, *args: Any) -> None:
    """Log ``message % args`` as Caffe's LOG statement at ``where`` ("solver.cpp:239") does."""
    if enabled(level):
        logger.log(level, message, *args, extra={"caffe_where": where, "native_thread": threading.get_native_id()})


def info(where: str, message: str, *args: Any) -> None:
    """LOG(INFO) at Caffe's ``where``."""
    log(INFO, where, message, *args)


def warning(where: str, message: str, *args: Any) -> None:
    """LOG(WARNING) at Caffe's ``where``."""
    log(WARNING, where, message, *args)


def error(where: str, message: str, *args: Any) -> None:
    """LOG(ERROR) at Caffe's ``where``."""
    log(ERROR, where, message, *args)


def real(value: Any) -> float:
    """A number as Caffe streams a float (Dtype) value: rounded to float32, for ``%g``."""
    return float(np.float32(value))
