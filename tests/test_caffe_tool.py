"""The ``caffe`` tool against the real ``caffe`` binary's runs (fixture ``caffe_tool/``, README section 11).

Each run of the real tool is repeated in a copy of its folder and the two stderr logs are compared line by
line: severity, ``file:line`` (caffe.cpp's included) and message, numbers within the fixtures' tolerance
(timings masked; the prefetch thread's "Restarting data prefetching" lines, whose place is a matter of
thread timing, left out). ``train`` starts from Caffe's own random weights (``random_seed: 7`` through
Caffe's generator), so its losses and snapshot are Caffe's. Then: the exit codes where Caffe exits or
aborts, bad input as one F line, SIGHUP/SIGINT effects, and a whole pipeline through the console scripts
(convert_imageset, compute_image_mean, caffe train, resume, caffe test) on pictures written here.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
from typing import List, Sequence, Tuple

import numpy as np
import pytest
import torch
from caffe_cases import ROOT

from fcn.tools import caffe as caffe_tool
from netspec import caffe_pb2
from netspec.caffemodel import read_caffemodel
from runner import caffe_rng
from runner.device import set_mode_cpu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "caffe_tool")
LMDB = os.path.join(ROOT, "data", "imageset", "lmdb_raw_16x20")
#: glog's line, with or without the year (the real log has glog 0.6's): severity, file:line, message.
GLOG_LINE = re.compile(r"^([IWEF])(?:\d{8}|\d{4}) \d\d:\d\d:\d\d\.\d{6} +\d+ ([\w.]+:\d+)\] (.*)$")
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|-?nan|-?inf")
#: Lines whose numbers are timings (they differ from run to run): masked whole.
TIMED = re.compile(r"iter/s|forward-backward time|\tforward: |\tbackward: |Average .*: |Total Time: ")
RESTARTING = "Restarting data prefetching from start."


# ----- running the tool -----

def script(name: str, module: str) -> List[str]:
    """The installed console script when it is this project's (setup.py's entry point), else ``python -m``."""
    path = shutil.which(name)
    if path:
        with open(path, "rb") as handle:
            if module.encode() in handle.read(4096):
                return [path]
    return [sys.executable, "-m", module]


def environment() -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GLOG_")}
    return {**env, "PYTHONPATH": REPO}


def run_script(argv: Sequence[str], cwd, module: str = "fcn.tools.caffe") -> subprocess.CompletedProcess:
    return subprocess.run(script(os.path.basename(module.rsplit(".", 1)[1]), module) + list(argv), cwd=cwd,
                          env=environment(), capture_output=True, text=True, timeout=300)


def run_in_process(argv: Sequence[str], cwd) -> Tuple[int, str, str]:
    """``caffe ARGV`` through its main in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = caffe_tool.main(list(argv) + ["--minloglevel=0"])
            except SystemExit as exit:
                status = exit.code
    finally:
        os.chdir(previous)
        caffe_rng.unseed()  # a seeded train leaves Caffe's generator, and a --gpu run the GPU, to no other test
        set_mode_cpu()
    return status, out.getvalue(), err.getvalue()


# ----- reading logs -----

def log_entries(text: str) -> List[Tuple[str, str, str]]:
    """(severity, file:line, message) per line; continuation lines (echoed prototxts) as ("", "", line)."""
    entries = []
    for line in text.splitlines():
        match = GLOG_LINE.match(line)
        entry = match.groups() if match else ("", "", line)
        if entry[2] != RESTARTING:
            entries.append(entry)
    return entries


def _split(message: str) -> Tuple[List[str], List[float]]:
    return NUMBER.split(message), [float(n) for n in NUMBER.findall(message)]


def assert_same_log(ours: str, real: str) -> None:
    """Line for line the same log: severity, file:line and words equal, numbers within the fixtures'
    tolerance (1e-5 relative), timings masked."""
    got, want = log_entries(ours), log_entries(real)
    assert [(s, w) for s, w, _ in got] == [(s, w) for s, w, _ in want]
    for (_, where, mine), (_, _, theirs) in zip(got, want):
        words, numbers = _split(mine)
        real_words, real_numbers = _split(theirs)
        assert words == real_words, (where, mine, theirs)
        if not TIMED.search(theirs):
            assert np.allclose(numbers, real_numbers, rtol=1e-5, atol=0), (where, mine, theirs)


def real_log(run: str) -> str:
    with open(os.path.join(TOOL, f"{run}.stderr.txt")) as handle:
        return handle.read()


def messages(text: str) -> List[str]:
    return [message for _, _, message in log_entries(text)]


def tool_messages(text: str) -> List[str]:
    """The messages of the tool's own lines (caffe.cpp)."""
    return [message for _, where, message in log_entries(text) if where.startswith("caffe.cpp:")]


def fatal_line(stderr: str) -> Tuple[str, str]:
    """The last line: an F line, as (file:line, message); nothing like a traceback before it."""
    assert "Traceback" not in stderr
    severity, where, message = log_entries(stderr)[-1]
    assert severity == "F", stderr[-2000:]
    return where, message


def assert_weights_close(path: str, real: str) -> None:
    """Every blob within 1e-5 of the largest of Caffe's, layer by layer."""
    ours, theirs = read_caffemodel(path), read_caffemodel(real)
    assert [layer.name for layer in ours.layer] == [layer.name for layer in theirs.layer]
    for mine, want in zip(ours.layer, theirs.layer):
        assert len(mine.blobs) == len(want.blobs)
        for a, b in zip(mine.blobs, want.blobs):
            a, b = np.asarray(a.data, np.float32), np.asarray(b.data, np.float32)
            assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5 * np.abs(b).max(), mine.name


# ----- the real tool's runs, repeated -----

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The real runs' folder: the tool's files in caffe_tool/, the LMDB at ../data/imageset/ (copied: reading
    an LMDB writes its lock file)."""
    root = tmp_path_factory.mktemp("caffe_tool_runs")
    work = root / "caffe_tool"
    work.mkdir()
    for name in ("solver.prototxt", "solver_weights.prototxt", "solver_resume.prototxt", "train_val.prototxt",
                 "zero_ip.caffemodel"):
        shutil.copy(os.path.join(TOOL, name), work / name)
    shutil.copytree(LMDB, root / "data" / "imageset" / "lmdb_raw_16x20")
    return work


@pytest.fixture(scope="module")
def train_run(folder):
    """``caffe train --solver=solver.prototxt``, a real process."""
    return run_script(["train", "--solver=solver.prototxt"], folder)


def test_train_logs_caffes_losses_and_writes_caffes_snapshot(folder, train_run):
    assert train_run.returncode == 0, train_run.stderr[-3000:]
    assert train_run.stdout == ""
    assert_same_log(train_run.stderr, real_log("train"))
    lines = messages(train_run.stderr)
    losses = [float(m.rsplit("= ", 1)[1]) for m in lines if "iter/s" in m]
    assert np.allclose(losses, [1.64024, 7.37466, 6.73721], rtol=1e-5, atol=0)
    assert [m for m in lines if "iter/s" in m][0].endswith("loss = 1.64024")
    final = next(m for m in lines if m.startswith("Iteration 3, loss = "))
    assert np.isclose(float(final.rsplit("= ", 1)[1]), 8.48954, rtol=1e-5, atol=0)
    assert lines[-2:] == ["Optimization Done.", "Optimization Done."]
    assert_weights_close(str(folder / "snap_iter_3.caffemodel"), os.path.join(TOOL, "snap_iter_3.caffemodel"))
    state = caffe_pb2.SolverState.FromString((folder / "snap_iter_3.solverstate").read_bytes())
    want = caffe_pb2.SolverState.FromString(open(os.path.join(TOOL, "snap_iter_3.solverstate"), "rb").read())
    assert (state.iter, state.current_step, state.learned_net) == (want.iter, want.current_step, want.learned_net)
    for mine, theirs in zip(state.history, want.history):
        assert np.abs(np.subtract(mine.data, theirs.data)).max() <= 1e-5 * np.abs(theirs.data).max()


def test_test_scores_each_batch_and_the_mean(folder, train_run):
    shutil.copy(os.path.join(TOOL, "snap_iter_3.caffemodel"), folder / "caffe_snap_iter_3.caffemodel")
    status, out, err = run_in_process(["test", "--model=train_val.prototxt", "--weights=caffe_snap_iter_3.caffemodel",
                                       "--iterations=2"], folder)
    assert (status, out) == (0, "")
    assert_same_log(err.replace("caffe_snap_iter_3", "snap_iter_3"), real_log("test"))
    assert tool_messages(err) == ["Use CPU.", "Running for 2 iterations.", "Batch 0, loss = 10.8333",
                                  "Batch 1, loss = 10.0569", "Loss: 10.4451", "loss = 10.4451 (* 1 = 10.4451 loss)"]


def test_weights_comma_list_applies_every_file_in_order(folder, train_run):
    shutil.copy(os.path.join(TOOL, "snap_iter_3.caffemodel"), folder / "snap_iter_3.caffemodel")
    status, out, err = run_in_process(["train", "--solver=solver_weights.prototxt",
                                       "--weights=snap_iter_3.caffemodel,zero_ip.caffemodel"], folder)
    assert (status, out) == (0, "")
    assert_same_log(err, real_log("train_weights_comma_list"))
    lines = messages(err)
    assert [m for m in lines if m.startswith("Finetuning")] == ["Finetuning from snap_iter_3.caffemodel",
                                                                "Finetuning from zero_ip.caffemodel"]
    assert next(m for m in lines if "iter/s" in m).endswith("loss = 1.60944")  # ln 5: the zero ip won


def test_snapshot_resumes_iteration_weights_and_history(folder, train_run):
    shutil.copy(os.path.join(TOOL, "snap_iter_3.caffemodel"), folder / "snap_iter_3.caffemodel")
    shutil.copy(os.path.join(TOOL, "snap_iter_3.solverstate"), folder / "snap_iter_3.solverstate")
    status, out, err = run_in_process(["train", "--solver=solver_resume.prototxt",
                                       "--snapshot=snap_iter_3.solverstate"], folder)
    assert (status, out) == (0, "")
    assert_same_log(err, real_log("train_resume_snapshot"))
    lines = messages(err)
    assert "Resuming from snap_iter_3.solverstate" in lines
    first = next(m for m in lines if "iter/s" in m)
    assert first.startswith("Iteration 3 (") and first.endswith("loss = 10.8333")
    assert "Iteration 5, loss = 11.3855" in lines
    assert_weights_close(str(folder / "snap_r_iter_5.caffemodel"), os.path.join(TOOL, "snap_r_iter_5.caffemodel"))


def test_time_reports_every_layer_in_phase_train(folder):
    status, out, err = run_in_process(["time", "--model=train_val.prototxt", "--iterations=2"], folder)
    assert (status, out) == (0, "")
    # the initial loss comes from unseeded random weights, in Caffe's run as here
    mask = re.compile(r"Initial loss: \S+")
    assert_same_log(mask.sub("Initial loss: x", err), mask.sub("Initial loss: x", real_log("time")))
    assert "phase: TRAIN" in err
    assert [m.split("\t")[0].strip() for m in messages(err) if "\tforward: " in m] == ["data", "ip", "loss"]


# ----- where Caffe exits or aborts -----

def test_bad_flag_is_gflags_error_and_status_1(folder):
    status, out, err = run_in_process(["train", "--solver=solver.prototxt", "--bogus_flag=1"], folder)
    assert (status, out, err) == (1, "", real_log("bad_flag"))


def test_no_action_prints_usage_on_stdout_and_exits_0(folder):
    status, out, err = run_in_process([], folder)
    with open(os.path.join(TOOL, "no_args.stdout.txt")) as real:
        # gflags names the file it was compiled from; the fixture hides the build path
        assert (status, out, err) == (0, real.read().replace("<caffe-src>/", ""), "")


def test_unknown_action_lists_actions_then_fatal_without_abort(folder):
    result = run_script(["fly"], folder)
    assert (result.returncode, result.stdout) == (1, "")
    assert log_entries(result.stderr) == [entry for entry in log_entries(real_log("unknown_action"))
                                          if entry[0]]  # Caffe's stack trace is what is not here
    assert result.stderr.count("\n") == 6


def test_snapshot_and_weights_together_is_caffes_check(folder):
    status, out, err = run_in_process(["train", "--solver=solver.prototxt", "--snapshot=snap_iter_3.solverstate",
                                       "--weights=snap_iter_3.caffemodel"], folder)
    assert (status, out) == (1, "")
    assert log_entries(err) == [entry for entry in log_entries(real_log("train_snapshot_and_weights")) if entry[0]]


@pytest.mark.parametrize("argv, where, message", [
    (["train"], "caffe.cpp:167", "Check failed: FLAGS_solver.size() > 0 (0 vs. 0) Need a solver definition to train."),
    (["test", "--weights=w"], "caffe.cpp:258",
     "Check failed: FLAGS_model.size() > 0 (0 vs. 0) Need a model definition to score."),
    (["test", "--model=m"], "caffe.cpp:259",
     "Check failed: FLAGS_weights.size() > 0 (0 vs. 0) Need model weights to score."),
    (["time"], "caffe.cpp:331", "Check failed: FLAGS_model.size() > 0 (0 vs. 0) Need a model definition to time."),
    (["time", "--model=train_val.prototxt", "--phase=VAL"], "caffe.cpp:119", 'phase must be "TRAIN" or "TEST"'),
    (["train", "--solver=solver.prototxt", "--sighup_effect=later"], "caffe.cpp:162",
     'Invalid signal effect "later" was specified'),
])
def test_caffes_checks(folder, argv, where, message):
    status, out, err = run_in_process(argv, folder)
    assert (status, out) == (1, "")
    assert fatal_line(err) == (where, message)


def test_gpu_requests(folder):
    """Without CUDA, a GPU is refused as by a CPU-only Caffe; an id must be a number either way."""
    status, _, err = run_in_process(["train", "--solver=solver.prototxt", "--gpu=x"], folder)
    assert status == 1 and fatal_line(err) == ("caffe.cpp:104", "--gpu=x: device ids are integers separated by "
                                                                "',' (or 'all')")
    status, _, err = run_in_process(["device_query"], folder)
    assert status == 0 and messages(err)[0] == "Querying GPUs "
    if torch.cuda.is_available():
        return
    for argv in (["train", "--solver=solver.prototxt", "--gpu=0"], ["device_query", "--gpu=0"],
                 ["test", "--model=train_val.prototxt", "--weights=zero_ip.caffemodel", "--gpu=all"]):
        status, _, err = run_in_process(argv, folder)
        where, message = fatal_line(err)
        assert status == 1 and message.startswith("Cannot use GPU in CPU-only Caffe: check mode."), err
        assert "PyTorch sees no CUDA device" in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_train_and_device_query(folder, train_run):
    status, _, err = run_in_process(["device_query", "--gpu=0"], folder)
    assert status == 0
    lines = messages(err)
    assert lines[1] == "Device id:                     0"
    assert f"Name:                          {torch.cuda.get_device_name(0)}" in lines
    gpu = folder / "gpu"
    gpu.mkdir()
    for name in ("solver.prototxt", "train_val.prototxt"):
        shutil.copy(folder / name, gpu / name)
    (gpu / "train_val.prototxt").write_text((gpu / "train_val.prototxt").read_text().replace("../data", "../../data"))
    status, _, err = run_in_process(["train", "--solver=solver.prototxt", "--gpu=0"], gpu)
    assert status == 0, err[-3000:]
    assert f"GPU 0: {torch.cuda.get_device_name(0)}" in messages(err)
    losses = [float(m.rsplit("= ", 1)[1]) for m in messages(err) if "iter/s" in m]
    assert np.allclose(losses, [1.64024, 7.37466, 6.73721], rtol=1e-4, atol=0)
    assert_weights_close(str(gpu / "snap_iter_3.caffemodel"), os.path.join(TOOL, "snap_iter_3.caffemodel"))


# ----- bad input: one F line naming the culprit -----

def test_bad_input_is_one_line_naming_the_file(folder, tmp_path):
    (tmp_path / "garbage.caffemodel").write_bytes(b"\x00\xffnot a caffemodel" * 10)
    missing_db = (folder / "train_val.prototxt").read_text().replace("lmdb_raw_16x20", "no_such_db")
    (tmp_path / "missing_db.prototxt").write_text(missing_db)
    (tmp_path / "missing_db_solver.prototxt").write_text(
        (folder / "solver.prototxt").read_text().replace("train_val.prototxt", str(tmp_path / "missing_db.prototxt")))
    cases = [
        (["train", "--solver=nope.prototxt"], "caffe.cpp:174", "nope.prototxt"),
        (["train", "--solver=solver.prototxt", "--weights=nope.caffemodel"], "caffe.cpp:230", "nope.caffemodel"),
        (["train", "--solver=solver.prototxt", "--snapshot=nope.solverstate"], "caffe.cpp:236", "nope.solverstate"),
        (["train", f"--solver={tmp_path}/missing_db_solver.prototxt"], "caffe.cpp:230", "no_such_db"),
        (["test", "--model=nope.prototxt", "--weights=zero_ip.caffemodel"], "caffe.cpp:279", "nope.prototxt"),
        (["test", "--model=train_val.prototxt", f"--weights={tmp_path}/garbage.caffemodel"], "caffe.cpp:280",
         "garbage.caffemodel"),
        (["time", f"--model={tmp_path}/missing_db.prototxt"], "caffe.cpp:347", "no_such_db"),
    ]
    for argv, where, culprit in cases:
        status, out, err = run_in_process(argv, folder)
        assert (status, out) == (1, ""), argv
        assert fatal_line(err)[0] == where and culprit in fatal_line(err)[1], (argv, err[-1000:])
    assert not (folder / "snap_iter_0.caffemodel").exists()


# ----- SIGHUP and SIGINT -----

def test_sighup_snapshots_and_sigint_stops(folder):
    solver = (folder / "solver.prototxt").read_text()
    (folder / "solver_signals.prototxt").write_text(
        solver.replace("max_iter: 3", "max_iter: 1000000").replace("snapshot: 3", "snapshot: 0")
        .replace('"snap"', '"signals"'))
    process = subprocess.Popen(script("caffe", "fcn.tools.caffe") + ["train", "--solver=solver_signals.prototxt"],
                               cwd=folder, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log: List[str] = []

    def read_until(text: str) -> None:
        for line in process.stderr:
            log.append(line)
            if text in line:
                return
        pytest.fail("the tool ended before logging " + text + ":\n" + "".join(log[-20:]))

    try:
        read_until("Iteration 2 (")
        process.send_signal(signal.SIGHUP)
        read_until("Snapshotting solver state")
        process.send_signal(signal.SIGINT)
        out, rest = process.communicate(timeout=120)
    finally:
        process.kill()
    text = "".join(log) + rest
    assert process.returncode == 0 and out == ""
    snapshots = sorted(folder.glob("signals_iter_*.caffemodel"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    assert len(snapshots) == 2 and all(p.with_suffix(".solverstate").exists() for p in snapshots)
    lines = messages(text)
    assert lines[-2:] == ["Optimization stopped early.", "Optimization Done."]
    assert log_entries(text)[-1][1] == "caffe.cpp:250"


# ----- a whole pipeline through the console scripts -----

CLASSES = 3
SOLVER = '''net: "train_val.prototxt"
base_lr: 0.05
momentum: 0.9
lr_policy: "fixed"
display: 1
max_iter: {max_iter}
snapshot: 3
snapshot_prefix: "snap"
solver_mode: CPU
random_seed: 3
'''
NET = '''name: "pictures"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  transform_param {{ scale: 0.0078125 mean_file: "mean.binaryproto" }}
  data_param {{ source: "pictures_lmdb" batch_size: 4 backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: {classes} weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
'''


def write_pictures(folder) -> None:
    """Twelve 8x10 PNGs of three classes (the class's channel bright, the others dim, some noise) and the
    list file convert_imageset reads."""
    import cv2
    rng = np.random.default_rng(0)
    (folder / "pictures").mkdir()
    lines = []
    for i in range(12):
        label = i % CLASSES
        image = rng.integers(0, 60, size=(8, 10, 3)).astype(np.uint8)
        image[:, :, label] += 150
        cv2.imwrite(str(folder / "pictures" / f"p{i:02d}.png"), image)
        lines.append(f"p{i:02d}.png {label}\n")
    (folder / "list.txt").write_text("".join(lines))


def test_pictures_to_a_scored_classifier_through_the_console_scripts(tmp_path):
    write_pictures(tmp_path)
    made = run_script(["pictures/", "list.txt", "pictures_lmdb"], tmp_path, "fcn.tools.convert_imageset")
    assert made.returncode == 0, made.stderr
    mean = run_script(["pictures_lmdb", "mean.binaryproto"], tmp_path, "fcn.tools.compute_image_mean")
    assert mean.returncode == 0, mean.stderr
    (tmp_path / "train_val.prototxt").write_text(NET.format(classes=CLASSES))
    (tmp_path / "solver.prototxt").write_text(SOLVER.format(max_iter=3))
    (tmp_path / "solver_more.prototxt").write_text(SOLVER.format(max_iter=6))

    first = run_script(["train", "--solver=solver.prototxt"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "snap_iter_3.caffemodel").exists() and (tmp_path / "snap_iter_3.solverstate").exists()
    resumed = run_script(["train", "--solver=solver_more.prototxt", "--snapshot=snap_iter_3.solverstate"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = messages(resumed.stderr)
    assert "Resuming from snap_iter_3.solverstate" in lines
    assert [int(m.split()[1]) for m in lines if "iter/s" in m] == [3, 4, 5]
    assert (tmp_path / "snap_iter_6.caffemodel").exists()

    scored = run_script(["test", "--model=train_val.prototxt", "--weights=snap_iter_6.caffemodel",
                         "--iterations=3"], tmp_path)
    assert scored.returncode == 0, scored.stderr[-3000:]
    entries = [(where, m) for _, where, m in log_entries(scored.stderr) if where.startswith("caffe.cpp")]
    batches = [(m.split(", ")[1].split(" = ")[0], float(m.rsplit(" = ", 1)[1])) for where, m in entries
               if where == "caffe.cpp:304"]
    assert [name for name, _ in batches] == ["accuracy", "loss"] * 3  # outputs in name order, per batch
    accuracy, loss = (np.mean([v for n, v in batches if n == name], dtype=np.float32) for name in ("accuracy", "loss"))
    summary = dict(m.split(" = ", 1) for where, m in entries if where == "caffe.cpp:321")
    assert np.isclose(float(summary["accuracy"]), accuracy, rtol=1e-5)
    assert summary["loss"].endswith(" loss)")
    assert np.isclose(float(summary["loss"].split(" ")[0]), loss, rtol=1e-5)
    assert accuracy > 1 / CLASSES  # it learned: twelve pictures of three plain classes, six iterations

    # the same weights through the pycaffe API score the same first batch
    from runner.net import Net
    previous = os.getcwd()
    os.chdir(tmp_path)
    try:
        net = Net("train_val.prototxt", caffe_pb2.TEST, weights="snap_iter_6.caffemodel")
        first_batch = net.forward()
    finally:
        os.chdir(previous)
    assert np.isclose(float(first_batch["loss"]), batches[1][1], rtol=1e-5)
