"""netspec.glog writes glog's lines and honours glog's environment (issue #15).

The formatter is checked byte for byte against a real Caffe log (glog 0.6, which puts the year in front
of the month; our default leaves it out, as older glog did and as parse_log.py needs); the environment
rules run in fresh processes, since glog reads its flags when it starts.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from typing import List, Tuple

import pytest
from caffe_cases import ROOT

from netspec.glog import GlogFormatter, severity_level

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_LOG = os.path.join(ROOT, "caffe_tool", "train_resume_snapshot.stderr.txt")
PREFIX = re.compile(r"^([IWEF])(\d{4})(\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d{6}) +(\d+) ([\w.]+:\d+)\] ")


def _records(text: str) -> List[Tuple[logging.LogRecord, str]]:
    """The real log as LogRecords (continuation lines belong to the message before them) and its lines."""
    entries: List[Tuple[logging.LogRecord, List[str]]] = []
    for line in text.splitlines():
        match = PREFIX.match(line)
        if match is None:
            entries[-1][1].append(line)
            continue
        letter, year, month, day, hour, minute, second, micros, thread, where = match.groups()
        created = time.mktime((int(year), int(month), int(day), int(hour), int(minute), int(second), 0, 0, -1))
        record = logging.LogRecord("caffe", {"I": 20, "W": 30, "E": 40, "F": 50}[letter], "", 0,
                                   line[match.end():], None, None)
        record.created = created + int(micros) / 1e6
        record.caffe_where, record.native_thread = where, int(thread)
        entries.append((record, [line]))
    for record, lines in entries:
        if len(lines) > 1:
            record.msg = "\n".join([record.msg, *lines[1:]]) + "\n"  # an echo: DebugString ends in a newline
    return [(record, "\n".join(lines)) for record, lines in entries]


def test_formatter_writes_the_real_log_byte_for_byte():
    with open(REAL_LOG) as f:
        text = f.read()
    records = _records(text)
    assert len(records) > 40
    with_year, classic = GlogFormatter(year=True), GlogFormatter()
    assert "\n".join(with_year.format(record) for record, _ in records) + "\n" == text
    for record, lines in records:
        assert classic.format(record) == re.sub(r"^([IWEF])\d{4}", r"\1", lines)


def _emit(env: dict, before: str = "") -> str:
    """The severities a fresh process shows on stderr for one INFO, WARNING and ERROR line."""
    code = (f"from netspec import glog\n{before}\n"
            "glog.info('a.cpp:1', 'info')\nglog.warning('b.cpp:2', 'warning')\nglog.error('c.cpp:3', 'error')\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": REPO, **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "", done.stderr
    return "".join(line[0] for line in done.stderr.splitlines())


@pytest.mark.parametrize("env, shown", [
    ({}, "IWE"),
    ({"GLOG_minloglevel": "1"}, "WE"),
    ({"GLOG_minloglevel": "2"}, "E"),
    ({"GLOG_minloglevel": "3"}, ""),
    ({"GLOG_minloglevel": "junk"}, "IWE"),  # glog's strtol: no number is 0
])
def test_pycaffe_without_init_shows_every_line_from_minloglevel(env, shown):
    assert _emit(env) == shown


@pytest.mark.parametrize("env, flags, shown", [
    ({}, "", "E"),  # glog's default stderrthreshold 2: INFO and WARNING only to its (unwritten) files
    ({"GLOG_stderrthreshold": "1"}, "", "WE"),
    ({"GLOG_logtostderr": "1"}, "", "IWE"),
    ({"GLOG_alsologtostderr": "true"}, "", "IWE"),
    ({"GLOG_logtostderr": "0"}, "", "E"),
    ({"GLOG_logtostderr": "1", "GLOG_minloglevel": "1"}, "", "WE"),
    ({"GLOG_minloglevel": "0", "GLOG_logtostderr": "0"}, "alsologtostderr=True", "IWE"),  # the caffe tool's run
    ({}, "minloglevel=1, logtostderr=True", "WE"),  # pycaffe's init_log(1, True)
])
def test_after_init_stderr_follows_glogs_flags(env, flags, shown):
    assert _emit(env, f"glog.init_google_logging({flags})") == shown


def test_year_in_prefix_is_glog_06s_format():
    with open(REAL_LOG) as f:
        real = f.readline()
    code = "from netspec import glog\nglog.info('caffe.cpp:197', 'Use CPU.')\n"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}
    for flag, pattern in (("1", PREFIX), ("0", re.compile(r"^I\d{4} \d{2}:\d{2}:\d{2}\.\d{6} +\d+ [\w.]+:\d+\] "))):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**clean, "PYTHONPATH": REPO, "GLOG_log_year_in_prefix": flag})
        line = done.stderr
        assert pattern.match(line) and line[pattern.match(line).end():] == real[PREFIX.match(real).end():]


def test_google_logging_restores_the_flags_after_a_tool(capsys):
    """A tool's main run in-process (tests, scripts) must not leave the process's glog changed."""
    from netspec import glog
    before = dict(vars(glog.FLAGS))
    with glog.google_logging(minloglevel=2):
        glog.warning("x.cpp:1", "hidden")
    assert dict(vars(glog.FLAGS)) == before
    assert severity_level(3) == logging.CRITICAL and severity_level(4) > logging.CRITICAL
    assert "hidden" not in capsys.readouterr().err
