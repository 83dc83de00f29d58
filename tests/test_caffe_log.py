"""Caffe's log (issue #15): a pycaffe solver logs the glog lines real Caffe logged for the same training,
word for word and file:line for file:line, and Caffe's tools/extra/parse_log.py can read them.

Two runs of the real ``caffe`` tool are replayed through pycaffe (fixtures ``caffe_tool/``): finetuning from
``snap_iter_3.caffemodel,zero_ip.caffemodel`` and resuming from ``snap_iter_3.solverstate``. Their Data
layer read an LMDB of 8 raw datums in order, 3 per batch; here a Python layer written below reads the same
LMDB the same way, so the losses are the real ones. Lines that belong to the ``caffe`` tool itself
(caffe.cpp) or to Caffe's Data layer and LMDB reader are left out of the comparison.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Tuple

import pytest
from caffe_cases import ROOT

from netspec.prototxt import parse_prototxt, read_prototxt, write_prototxt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "caffe_tool")
LMDB = os.path.join(ROOT, "data", "imageset", "lmdb_raw_16x20")

#: glog's line: severity, MMDD, time, thread id, file:line, message.
GLOG_LINE = re.compile(r"^([IWEF])(\d{2})(\d{2}) (\d{2}:\d{2}:\d{2})\.(\d{6}) +(\d+) ([\w.]+):(\d+)\] (.*)$")
#: The real log's prefix (glog 0.6 puts the year in front of MMDD).
REAL_LINE = re.compile(r"^[IWEF]\d{8} \d{2}:\d{2}:\d{2}\.\d{6} +\d+ ([\w.]+):(\d+)\] (.*)$")
#: Files whose lines the replay must reproduce: the solver and the net, not the tool or the Data layer.
COMPARED = ("solver.cpp", "sgd_solver.cpp", "net.cpp", "layer_factory.hpp", "upgrade_proto.cpp")

FEED_LAYER = '''
import ast

import lmdb
import numpy as np

from netspec import caffe_pb2
from runner.python_layer import Layer


class LmdbFeed(Layer):
    """Caffe's Data layer on raw datums: items in key order, batch after batch, wrapping around; x * scale."""

    def setup(self, bottom, top):
        param = ast.literal_eval(self.param_str)
        self.scale, self.batch = param["scale"], param["batch_size"]
        with lmdb.open(param["source"], readonly=True, lock=False).begin() as txn:
            datums = [caffe_pb2.Datum.FromString(value) for _, value in txn.cursor()]
        self.items = [(np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width), d.label)
                      for d in datums]
        self.next = 0

    def reshape(self, bottom, top):
        top[0].reshape(self.batch, *self.items[0][0].shape)
        top[1].reshape(self.batch)

    def forward(self, bottom, top):
        for i in range(self.batch):
            data, label = self.items[self.next]
            top[0].data[i] = data.astype(np.float32) * np.float32(self.scale)
            top[1].data[i] = label
            self.next = (self.next + 1) % len(self.items)

    def backward(self, top, propagate_down, bottom):
        pass
'''

REPLAY = '''
import sys
import fcn.caffe as caffe

caffe.get_solver("solver_weights.prototxt").solve()
sys.stderr.write("=== resume\\n")
solver = caffe.get_solver("solver_resume.prototxt")
solver.restore("snap_iter_3.solverstate")
solver.solve()
sys.stderr.write("=== with a test net\\n")
caffe.get_solver("solver_test.prototxt").solve()
'''


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The caffe tool's folder, its Data layer replaced by the LMDB-reading Python layer."""
    work = tmp_path_factory.mktemp("caffe_tool")
    for name in ("snap_iter_3.caffemodel", "snap_iter_3.solverstate", "zero_ip.caffemodel", "solver_resume.prototxt"):
        shutil.copy(os.path.join(TOOL, name), work / name)
    net = read_prototxt(os.path.join(TOOL, "train_val.prototxt"))
    data = net.layer[0]
    feed = {"source": LMDB, "scale": data.transform_param.scale, "batch_size": data.data_param.batch_size}
    data.ClearField("transform_param")
    data.ClearField("data_param")
    data.type = "Python"
    data.python_param.module, data.python_param.layer, data.python_param.param_str = "lmdb_feed", "LmdbFeed", repr(feed)
    write_prototxt(work / "train_val.prototxt", net)
    (work / "lmdb_feed.py").write_text(FEED_LAYER)
    finetune = open(os.path.join(TOOL, "solver_weights.prototxt")).read()
    finetune += 'weights: "snap_iter_3.caffemodel,zero_ip.caffemodel"\n'  # the tool's --weights flag
    (work / "solver_weights.prototxt").write_text(finetune)
    (work / "solver_test.prototxt").write_text(finetune.replace('"snap_w"', '"snap_t"') +
                                               "test_iter: 1\ntest_interval: 3\n")
    return work


def _environment(**glog: str) -> Dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("GLOG_")}
    return {**env, "PYTHONPATH": REPO, **glog}


@pytest.fixture(scope="module")
def replay(work) -> Dict[str, object]:
    """Run the replay in a fresh Python (glog reads its environment at start-up); its stderr by run."""
    env = _environment(GLOG_minloglevel="0")
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-c", REPLAY], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    finetune_log, rest = err.split("=== resume\n")
    resume_log, test_log = rest.split("=== with a test net\n")
    return {"finetune": finetune_log, "resume": resume_log, "test": test_log, "pid": proc.pid,
            "started": started, "ended": time.time(), "stdout": out}


def _normalized(message: str) -> str:
    """Timings vary from run to run (meta.json's convention)."""
    return re.sub(r"\(\S+ iter/s, \S+s/", "(<rate> iter/s, <t>s/", message)


def _caffe_lines(text: str, pattern: re.Pattern) -> List[Tuple[str, str]]:
    """(file:line, message) of the glog lines from the compared files."""
    found = []
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            *_, file, number, message = match.groups()
            if file in COMPARED:
                found.append((f"{file}:{number}", _normalized(message)))
    return found


def _real_log(run: str) -> str:
    with open(os.path.join(TOOL, f"{run}.stderr.txt")) as f:
        return f.read()


@pytest.mark.parametrize("ours, real", [("finetune", "train_weights_comma_list"), ("resume", "train_resume_snapshot")])
def test_solver_and_net_log_what_caffe_logged(replay, ours, real):
    assert _caffe_lines(replay[ours], GLOG_LINE) == _caffe_lines(_real_log(real), REAL_LINE)
    run = next(r for r in json.load(open(os.path.join(TOOL, "meta.json")))["runs"] if r["run"] == real)
    messages = [m for _, m in _caffe_lines(replay[ours], GLOG_LINE)]
    key_lines = [line for line in run["key_lines"] if line not in ("Use CPU.", "Starting Optimization")
                 and not line.startswith(("Finetuning", "Resuming"))][:-1]  # the last is caffe.cpp's
    assert [m for m in messages if m in key_lines] == key_lines


def _echo(text: str, title: str) -> List[str]:
    """The unprefixed lines after the glog line ending in ``title`` (an echoed prototxt)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(title))
    end = next(i for i in range(start + 1, len(lines)) if REAL_LINE.match(lines[i]) or GLOG_LINE.match(lines[i]))
    return lines[start + 1:end]


def test_echoed_prototxts_read_like_caffes(replay):
    """The solver and net echoes are Caffe's DebugString text; only what the caffe tool adds differs (its
    train_state from --level/--stage) and the Data layer, replaced here."""
    real = _real_log("train_weights_comma_list")
    real_solver = _echo(real, "Initializing solver from parameters: ")
    begin = real_solver.index("train_state {")
    del real_solver[begin:real_solver.index("}", begin) + 1]
    assert _echo(replay["finetune"], "Initializing solver from parameters: ") == real_solver
    ours_net = "\n".join(_echo(replay["finetune"], "Initializing net from parameters: "))
    real_net = "\n".join(_echo(real, "Initializing net from parameters: "))
    after_data = re.compile(r'\nlayer \{\n  name: "ip".*', re.S)
    assert after_data.search(ours_net).group() == after_data.search(real_net).group()
    ours, want = parse_prototxt(ours_net), parse_prototxt(real_net)
    assert (ours.name, ours.state.phase, ours.state.level) == (want.name, want.state.phase, want.state.level)


def test_every_line_is_a_glog_line_of_this_process(replay):
    """Severity, local date and time within the run, the process's (main) thread id, file:line."""
    started = datetime.datetime.fromtimestamp(replay["started"] - 1)
    ended = datetime.datetime.fromtimestamp(replay["ended"] + 1)
    previous = started
    in_echo = False
    for line in replay["finetune"].splitlines():
        match = GLOG_LINE.match(line)
        if match is None:
            assert in_echo, f"not a glog line: {line!r}"
            continue
        letter, month, day, clock, micros, thread, *_, message = match.groups()
        assert letter == "I" and int(thread) == replay["pid"]
        stamp = datetime.datetime.strptime(f"{started.year}{month}{day} {clock}.{micros}", "%Y%m%d %H:%M:%S.%f")
        assert previous <= stamp <= ended
        previous = stamp
        in_echo = message.endswith("parameters: ")
    assert replay["stdout"] == ""


# ----- Caffe's tools/extra/parse_log.py and parse_log.sh, at the level of their regexes -----
PARSE_ITERATION = re.compile(r"Iteration (\d+)")
PARSE_TRAIN = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
PARSE_TEST = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
PARSE_LR = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")


def _parse_log_datetime(line: str, year: int) -> datetime.datetime:
    """extract_seconds.extract_datetime_from_line: month and day from the first word after the severity."""
    words = line.strip().split()
    timestamp = words[1]
    pos = timestamp.rfind(".")
    hour, minute, second = (int(x) for x in timestamp[:pos].split(":"))
    return datetime.datetime(year, int(words[0][1:3]), int(words[0][3:]), hour, minute, second,
                             int(timestamp[pos + 1:]))


def _parse_log(text: str, year: int) -> Tuple[List[tuple], List[tuple]]:
    """parse_log.py's loop: (iteration, seconds, learning rate, output name, value) per output line."""
    lines = text.splitlines()
    start = _parse_log_datetime(next(line for line in lines if "Solving" in line), year)  # get_start_time
    iteration, rate, train, test = -1, float("nan"), [], []
    for line in lines:
        found = PARSE_ITERATION.search(line)
        if found:
            iteration = float(found.group(1))
        if iteration == -1:
            continue
        try:
            seconds = (_parse_log_datetime(line, year) - start).total_seconds()
        except (ValueError, IndexError):
            continue  # parse_log.py skips lines that are not glog lines
        found = PARSE_LR.search(line)
        if found:
            rate = float(found.group(1))
        for regex, rows in ((PARSE_TRAIN, train), (PARSE_TEST, test)):
            found = regex.search(line)
            if found:
                rows.append((iteration, seconds, rate, found.group(2), float(found.group(3))))
    return train, test


def test_parse_log_reads_the_training(replay):
    year = datetime.date.fromtimestamp(replay["started"]).year
    train, test = _parse_log(replay["test"], year)
    real = [_normalized(m) for _, m in _caffe_lines(_real_log("train_weights_comma_list"), REAL_LINE)]
    want = [float(m.rsplit("= ", 1)[1]) for m in real if m.startswith("Iteration") and "iter/s" in m]
    assert [(it, name, value) for it, _, _, name, value in train] == [(i, "loss", v) for i, v in enumerate(want)]
    assert [rate for *_, rate, _, _ in train][1:] == [0.1, 0.1]  # parse_log.py fills the first row's in later
    assert [(it, name) for it, _, _, name, _ in test] == [(0, "loss"), (3, "loss")]
    assert test[0][4] == want[0]  # at iteration 0 the test net sees the train net's first batch
    assert all(seconds >= 0 for _, seconds, *_ in train + test)


def test_parse_log_sh_columns(replay):
    """parse_log.sh cuts fields with awk: the rate is field 9 of ', lr = ' lines, a test output field 11."""
    lines = replay["test"].splitlines()
    rates = [line.split()[8] for line in lines if ", lr = " in line]
    assert rates == ["0.1"] * 3
    scores = [line.split()[10] for line in lines if "Test net output #0" in line]
    assert [float(s) for s in scores] == [row[4] for row in _parse_log(replay["test"], 2000)[1]]


def _fcn_train(work, out: str, **glog: str) -> subprocess.CompletedProcess:
    folder = work / out
    folder.mkdir()
    shutil.copy(work / "solver_weights.prototxt", folder / "solver.prototxt")
    for name in ("train_val.prototxt", "lmdb_feed.py", "snap_iter_3.caffemodel", "zero_ip.caffemodel"):
        shutil.copy(work / name, folder / name)
    return subprocess.run([sys.executable, "-m", "fcn", "train", str(folder), "--iters", "3", "--out",
                           str(folder / "out")], cwd=folder, env=_environment(**glog), capture_output=True,
                          text=True, timeout=600)


def test_fcn_train_keeps_its_console_and_logs_like_caffe_train_when_asked(work):
    quiet = _fcn_train(work, "quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert not [line for line in quiet.stderr.splitlines() if GLOG_LINE.match(line)]
    assert "done at iteration 3" in quiet.stdout
    logged = _fcn_train(work, "logged", GLOG_logtostderr="1")
    assert logged.returncode == 0, logged.stderr[-3000:]
    assert "\r" not in logged.stderr  # no progress bar glued into the log
    train, _ = _parse_log(logged.stderr, 2000)
    real = [_normalized(m) for _, m in _caffe_lines(_real_log("train_weights_comma_list"), REAL_LINE)]
    assert [(it, value) for it, _, _, _, value in train] == \
        [(i, float(m.rsplit("= ", 1)[1])) for i, m in enumerate(m for m in real if "iter/s" in m)]
    messages = [m for _, m in _caffe_lines(logged.stderr, GLOG_LINE)]
    assert messages[-1] == "Optimization Done." and "Solving tool_net" in messages
