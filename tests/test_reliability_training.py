"""Training under faults (issue #14, the training side), with real files, processes and signals:

* a read that never returns (an image that is a FIFO nobody writes, standing in for a stalled network
  mount), in our data layers and in a layer of the user's that reads in the main thread: SIGINT and
  SIGTERM stop the run within 2 s, with a snapshot and exit status 130/143, naming the stalled file;
* SIGINT while scoring stops at the next image, the partial score discarded;
* a signal while snapshotting lets the snapshot finish, then stops; a full disk while snapshotting: one
  error line naming the file and the cause, no temporary file left; kill -9 while snapshotting: the
  temporary files it leaves are cleared when the next run starts;
* a NaN loss names the last snapshot whose weights are all finite, and that one resumes;
* resuming mid-epoch (stopped by a real SIGINT) repeats the uninterrupted run exactly;
* ``param_str`` values are checked by type and range, with one-line errors naming the key; prefetch
  threads end with the process.
"""
import json
import os
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pytest

from data_layers.synthetic import write_dataset
from fcn.cli import main as fcn_main
from netspec.caffemodel import load_caffemodel
from runner.blob import Blob

REPO = Path(__file__).resolve().parents[1]
N = 4            # pictures per split
SIZE = (24, 32)

# ----- experiments: a tiny FCN on a synthetic VOC, run by `fcn train` -----

LAYERS = '''
import os, signal, time
from fcn.caffe import Layer

class _PassThrough(Layer):
    def setup(self, bottom, top):
        self.count = 0
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        self.count += 1
        self.act()
        top[0].data[...] = bottom[0].data
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff

class SignalAt(_PassThrough):
    """Sends this process SIGINT during its FCN_TEST_SIGINT_AT-th forward: a real signal at a known step."""
    def act(self):
        if self.count == int(os.environ.get("FCN_TEST_SIGINT_AT", "0")):
            os.kill(os.getpid(), signal.SIGINT)

class ReadsFifoAt(_PassThrough):
    """Reads FCN_TEST_FIFO in the main thread at its 3rd forward, as the release's voc_layers.py reads
    its images: the read never returns when nobody writes the FIFO."""
    def act(self):
        if self.count == 3:
            with open(os.environ["FCN_TEST_FIFO"], "rb") as handle:
                handle.read()

class Slow(_PassThrough):
    def act(self):
        time.sleep(0.15)
'''


def _net(voc_dir: str, split: str, params: Dict[str, Any], extra: str, width: int) -> str:
    """data -> [extra pass-through layer on 'data'] -> conv -> relu -> dropout -> score -> loss."""
    data_params = repr(dict(dict(voc_dir=voc_dir, split=split, seed=3, randomize=False, prefetch=0), **params))
    bottom = "data"
    if extra:
        extra = f'layer {{ name: "extra" type: "Python" bottom: "data" top: "data2" ' \
                f'python_param {{ module: "fault_layers" layer: "{extra}" }} }}'
        bottom = "data2"
    return textwrap.dedent(f"""
    layer {{ name: "data" type: "Python" top: "data" top: "label"
            python_param {{ module: "data_layers.voc" layer: "VOCSegDataLayer" param_str: "{data_params}" }} }}
    {extra}
    layer {{ name: "conv1" type: "Convolution" bottom: "{bottom}" top: "conv1"
            convolution_param {{ num_output: {width} kernel_size: 3 pad: 1
                                 weight_filler {{ type: "gaussian" std: 0.05 }} }} }}
    layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
    layer {{ name: "drop1" type: "Dropout" bottom: "conv1" top: "conv1" dropout_param {{ dropout_ratio: 0.3 }} }}
    layer {{ name: "score" type: "Convolution" bottom: "conv1" top: "score"
            convolution_param {{ num_output: 21 kernel_size: 1 weight_filler {{ type: "gaussian" std: 0.05 }} }} }}
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
            loss_param {{ ignore_label: 255 normalize: false }} }}
    """)


def _experiment(root: Path, train: Optional[Dict[str, Any]] = None, val: Optional[Dict[str, Any]] = None,
                train_extra: str = "", val_extra: str = "", n: int = N, width: int = 8,
                solver: str = "") -> Path:
    """A model folder (solver.prototxt, train/val.prototxt) over a synthetic VOC in ``root/data``."""
    keys = write_dataset("voc", root / "data", n=n, size=SIZE, seed=0)
    (root / "fault_layers.py").write_text(LAYERS)
    model = root / "model"
    model.mkdir()
    (model / "train.prototxt").write_text(_net(keys["voc_dir"], "train", train or {}, train_extra, width))
    (model / "val.prototxt").write_text(_net(keys["voc_dir"], "val", val or {}, val_extra, width))
    settings = dict(train_net='"train.prototxt"', test_net='"val.prototxt"', test_iter=n, test_interval=999999,
                    base_lr=1e-4, lr_policy='"fixed"', momentum=0.9, weight_decay=0.0005, max_iter=100, display=1,
                    average_loss=1, snapshot=0, snapshot_prefix='"snapshot/train"', random_seed=5)
    for line in solver.splitlines():
        key, _, value = line.partition(":")
        if key.strip():
            settings[key.strip()] = value.strip()
    (model / "solver.prototxt").write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
    return model


def _env(root: Path, **extra: str) -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{root}", **extra)


def _start(root: Path, args: List[str], preexec: Optional[Callable[[], None]] = None, **env: str) -> subprocess.Popen:
    """`fcn train <args>` in a process of its own (a real one, to signal and kill)."""
    return subprocess.Popen([sys.executable, "-m", "fcn", "train", *args], cwd=root, env=_env(root, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


def _wait_until(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early (rc {proc.returncode}): {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.02)


def _log(out: Path) -> List[Dict[str, Any]]:
    """The run's log records so far (a line still being appended is left for later)."""
    path = out / "train_log.jsonl"
    return [json.loads(line) for line in path.read_text().split("\n")[:-1]] if path.exists() else []


def _losses(out: Path) -> Dict[int, float]:
    return {r["iter"]: r["loss"] for r in _log(out) if "loss" in r and "mean_iu" not in r}


def _stop_within(proc: subprocess.Popen, sig: int, seconds: float = 2.0) -> str:
    """Send ``sig``; the run must end within ``seconds`` (it is killed otherwise). Returns its stderr."""
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"{signal.Signals(sig).name} did not stop the run within {seconds} s: {err[-2000:]}")
    assert time.monotonic() - sent < seconds
    return err


def _replace_with_fifo(path: Path) -> Path:
    path.unlink()
    os.mkfifo(path)
    return path


def _reader_waits(fifo: Path) -> Callable[[], bool]:
    """Whether a reader has ``fifo`` open (or is blocked opening it); if so the writer end opened here is
    kept open and never written, so that the reader's read blocks for good."""
    held: List[int] = []

    def waiting() -> bool:
        try:
            held.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: no reader yet
            return False
        return True
    return waiting


def _train_ids(root: Path, split: str) -> List[str]:
    return (root / "data" / "pascal" / "VOC2011" / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


# ----- 4: a read that never returns -----

@pytest.mark.parametrize("sig, prefetch", [(signal.SIGINT, 0), (signal.SIGTERM, 2)])
def test_a_stalled_read_is_abandoned_on_a_signal(tmp_path: Path, sig: int, prefetch: int) -> None:
    """Sample 2 of the training split is a FIFO nobody writes (a stalled network mount): iteration 2
    waits for it forever. One signal stops the run within 2 s, naming the file, after a snapshot."""
    model = _experiment(tmp_path, train=dict(prefetch=prefetch))
    fifo = _replace_with_fifo(tmp_path / "data/pascal/VOC2011/JPEGImages" / f"{_train_ids(tmp_path, 'train')[2]}.jpg")
    out = tmp_path / "out"
    proc = _start(tmp_path, [str(model), "--out", str(out)])
    _wait_until(_reader_waits(fifo), proc)
    _wait_until(lambda: 1 in _losses(out), proc)
    time.sleep(0.3)   # iteration 2 now waits for the FIFO's sample
    err = _stop_within(proc, sig)
    assert proc.returncode == 128 + sig, err
    assert f"abandoned the read of {fifo}" in err
    assert (out / "snapshot" / "train_iter_2.solverstate").exists()
    assert (out / "snapshot" / "train_iter_2.datastate").exists()
    assert _log(out)[-1] == {"iter": 2, "event": "interrupted"}


@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)])
def test_a_read_in_the_main_thread_is_interrupted_too(tmp_path: Path, signals: tuple) -> None:
    """A layer of the user's reads a FIFO in the main thread, where the signal handler's flag is never
    looked at (PEP 475 retries the read): the unanswered stop interrupts the read after 0.5 s and the
    run snapshots; a second signal interrupts it at once, without a snapshot."""
    model = _experiment(tmp_path, train_extra="ReadsFifoAt")
    fifo = tmp_path / "never_written"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    proc = _start(tmp_path, [str(model), "--out", str(out)], FCN_TEST_FIFO=str(fifo))
    _wait_until(_reader_waits(fifo), proc)
    for sig in signals[:-1]:
        proc.send_signal(sig)
        time.sleep(0.25)  # a second Ctrl-C, before the first is 0.5 s old
    err = _stop_within(proc, signals[-1])
    assert proc.returncode == 128 + signals[0], err
    snapshot = out / "snapshot" / "train_iter_2.solverstate"   # iteration 2 had not updated anything
    if len(signals) == 1:
        assert "SIGTERM not answered within 0.5 s" in err and snapshot.exists()
    else:
        assert "second signal (SIGINT): stopping at once, without a snapshot" in err and not snapshot.exists()


# ----- 5: a signal while scoring -----

def test_sigint_while_scoring_stops_at_the_next_image(tmp_path: Path) -> None:
    n = 16
    model = _experiment(tmp_path, val_extra="Slow", n=n)    # scoring: 16 images at 0.15 s
    out = tmp_path / "out"
    proc = _start(tmp_path, [str(model), "--out", str(out), "--iters", "4", "--score-every", "2"])
    _wait_until(lambda: 1 in _losses(out), proc)
    time.sleep(0.8)   # scoring at iteration 2 is under way
    err = _stop_within(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    assert re.search(rf"scoring stopped \(after \d+ of {n} images\); the partial score is discarded", err), err
    assert not [r for r in _log(out) if "mean_iu" in r]
    assert (out / "snapshot" / "train_iter_2.solverstate").exists()


# ----- 10: a full disk, and kill -9, while snapshotting -----

class FullDisk:
    """A folder where writing fails as on a full disk.

    Preferred: a real 1 MiB tmpfs filled up (mounting needs root; then writes fail with ENOSPC, "No space
    left on device"). Elsewhere: RLIMIT_FSIZE, set in the child process only (``preexec``), makes any
    write past ``LIMIT`` bytes fail with EFBIG ("File too large"), through the same error paths; SIGXFSZ
    is ignored so that the write fails instead of the process being killed."""

    LIMIT = 2048

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder = folder
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                                      capture_output=True).returncode == 0 if os.geteuid() == 0 else False
        if self.mounted:
            with open(folder / "filler", "wb") as handle:
                try:
                    while True:
                        handle.write(b"\0" * 65536)
                        handle.flush()
                except OSError:
                    pass
        self.cause = "No space left on device" if self.mounted else "File too large"

    def preexec(self) -> Optional[Callable[[], None]]:
        if self.mounted:
            return None

        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.LIMIT, self.LIMIT))
        return limit

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.folder)], check=True)


@pytest.fixture
def full_disk(tmp_path: Path):
    disk = FullDisk(tmp_path / "disk")
    yield disk
    disk.close()


def _temps(folder: Path) -> List[str]:
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


def test_a_full_disk_while_snapshotting_is_one_error_line_and_leaves_no_temp(tmp_path: Path, full_disk) -> None:
    model = _experiment(tmp_path, width=16, solver="snapshot: 2")   # a 3.3 kB caffemodel: over the limit
    out = tmp_path / "out"
    out.mkdir()
    (out / "snapshot").symlink_to(full_disk.folder)
    proc = _start(tmp_path, [str(model), "--out", str(out), "--iters", "4"], preexec=full_disk.preexec())
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, err
    assert f"cannot write {out}/snapshot/train_iter_2.caffemodel: {full_disk.cause}" in errors[0]
    assert _temps(full_disk.folder) == [] and _temps(out) == []
    # The records (best weights and their .json) are written the same way: one error, no temp.
    write = ("from netspec.atomic import write_atomically\ntry:\n"
             f"    write_atomically({str(full_disk.folder / 'best.caffemodel.json')!r}, b'{{}}' * 4096)\n"
             "except OSError as err:\n    print(err)\n")
    child = subprocess.run([sys.executable, "-c", write], env=_env(tmp_path), capture_output=True, text=True,
                           preexec_fn=full_disk.preexec(), timeout=60)
    assert child.stdout.strip().endswith(f"cannot write {full_disk.folder}/best.caffemodel.json: {full_disk.cause}")
    assert _temps(full_disk.folder) == []


WIDE = '''
layer { name: "pool_all" type: "Pooling" bottom: "data" top: "pooled" pooling_param { pool: AVE global_pooling: true } }
layer { name: "wide" type: "InnerProduct" bottom: "pooled" top: "wide" param { lr_mult: 0 } param { lr_mult: 0 }
        inner_product_param { num_output: 1000000 } }
layer { name: "silence" type: "Silence" bottom: "wide" }
'''


def _snapshotting(tmp_path: Path) -> Path:
    """A model that snapshots every iteration 16 MB files (weights, history): slow enough to catch."""
    model = _experiment(tmp_path, solver="snapshot: 1")
    train = model / "train.prototxt"
    train.write_text(train.read_text() + WIDE)
    return model


def _while_snapshotting(root: Path, model: Path, out: Path) -> subprocess.Popen:
    """`fcn train` caught while it writes the caffemodel of a snapshot (the datastate and the solverstate
    come after it)."""
    proc = _start(root, [str(model), "--out", str(out)])
    _wait_until(lambda: (out / "snapshot").is_dir() and any(".caffemodel." in t for t in _temps(out / "snapshot")),
                proc, timeout=120)
    return proc


def test_a_signal_while_snapshotting_lets_the_snapshot_finish_then_stops(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _while_snapshotting(tmp_path, _snapshotting(tmp_path), out)
    writing = int(re.match(r"\.train_iter_(\d+)\.", _temps(out / "snapshot")[0]).group(1))
    err = _stop_within(proc, signal.SIGINT)
    assert proc.returncode == 130, err
    assert _temps(out / "snapshot") == []
    assert all((out / "snapshot" / f"train_iter_{writing}.{ext}").exists()
               for ext in ("caffemodel", "datastate", "solverstate"))
    assert _log(out)[-1] == {"iter": writing, "event": "interrupted"}   # no further iteration, no second snapshot


def test_temp_files_of_a_run_killed_while_snapshotting_are_cleared_by_the_next(tmp_path: Path) -> None:
    model = _snapshotting(tmp_path)
    out = tmp_path / "out"
    snapshots = out / "snapshot"
    left: List[str] = []
    for _ in range(5):
        proc = _while_snapshotting(tmp_path, model, out)
        proc.kill()
        proc.communicate()
        left = _temps(snapshots)
        if left:
            break
    ours = rf"\.train_iter_\d+\.(caffemodel|solverstate|datastate)\.{proc.pid}\.[0-9a-f]{{8}}\.tmp"
    assert left and all(re.fullmatch(ours, name) for name in left), left
    mine = snapshots / f".train_iter_9.caffemodel.{os.getpid()}.0123abcd.tmp"   # a live writer's: kept
    other = snapshots / "notes.tmp"                                              # not ours: kept
    mine.write_bytes(b"x")
    other.write_bytes(b"x")
    (tmp_path / "again").mkdir()
    model_small = _experiment(tmp_path / "again")    # a fast net, writing into the same snapshot folder
    assert fcn_main(["train", str(model_small), "--out", str(out), "--iters", "1"]) == 0
    assert sorted(_temps(snapshots)) == sorted([mine.name, other.name])


# ----- 11: a NaN loss names the last snapshot with finite weights -----

def test_a_nan_stop_names_the_last_snapshot_with_finite_weights(tmp_path: Path, capsys) -> None:
    model = _experiment(tmp_path, solver="snapshot: 1\nbase_lr: 30\nmomentum: 0.99")
    out = tmp_path / "out"
    assert fcn_main(["train", str(model), "--out", str(out), "--iters", "40"]) == 1
    message = capsys.readouterr().err
    stopped = int(re.search(r"iteration (\d+): the loss is", message).group(1))
    named = re.search(r"the last snapshot with finite weights is (\S+\.solverstate)", message).group(1)
    at = int(re.search(r"_iter_(\d+)\.solverstate", named).group(1))
    latest = out / "snapshot" / f"train_iter_{stopped}.caffemodel"
    assert latest.exists() and at < stopped          # the latest snapshot is the trap the message avoids
    _, weights = load_caffemodel(latest)
    assert max(np.abs(w).max() if np.isfinite(w).all() else np.inf for ws in weights.values() for w in ws) > 1e6
    _, good = load_caffemodel(named.replace(".solverstate", ".caffemodel"))
    assert all(np.isfinite(w).all() for ws in good.values() for w in ws)
    assert json.loads(Path(named.replace(".solverstate", ".datastate")).read_text())["finite_weights"] is True
    # and it resumes: its first iteration has a finite loss
    fcn_main(["train", str(model), "--out", str(tmp_path / "resumed"), "--restore", named, "--iters", "1"])
    assert np.isfinite(_losses(tmp_path / "resumed")[at])


# ----- 12: resume is exact anywhere -----

def test_resuming_mid_epoch_after_sigint_repeats_the_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    """Shuffled, mirrored, jittered data read ahead on threads, and Dropout: an uninterrupted run of 9
    iterations against one stopped by a real SIGINT at iteration 6 (mid-epoch: 4 samples per epoch) and
    resumed with ``--snapshot``: the same loss at every iteration and the same final weights."""
    monkeypatch.syspath_prepend(str(tmp_path))
    data = dict(randomize=True, mirror=True, jitter=2, prefetch=2)
    model = _experiment(tmp_path, train=data, train_extra="SignalAt", solver="max_iter: 9")
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    # every run in a fresh process of the same kind: the pytest process may have another thread count by
    # now, and a different split of a sum across threads changes the last bit of a weight
    whole_run = _start(tmp_path, [str(model), "--out", str(whole)])
    assert whole_run.communicate(timeout=120) and whole_run.returncode == 0
    proc = _start(tmp_path, [str(model), "--out", str(stopped)], FCN_TEST_SIGINT_AT="6")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err                              # an interrupted run exits non-zero
    state = stopped / "snapshot" / "train_iter_6.solverstate"
    assert state.exists() and 6 % N != 0
    resumed = _start(tmp_path, [str(model), "--out", str(stopped), "--snapshot", str(state)])
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err[-2000:]
    # the logged loss is Caffe's float32 running mean, which restarts with every step() call as Caffe's
    # Solver::Step does: after a resume its last bits may differ; the training itself is exact (weights below)
    assert _losses(stopped) == pytest.approx(_losses(whole), rel=1e-6) and len(_losses(whole)) == 9
    _, want = load_caffemodel(whole / "snapshot" / "train_iter_9.caffemodel")
    _, got = load_caffemodel(stopped / "snapshot" / "train_iter_9.caffemodel")
    for layer in want:
        for a, b in zip(want[layer], got[layer]):
            np.testing.assert_array_equal(a, b)
    # Without the datastate the data restarts from the first sample: the check above is not vacuous.
    state.with_suffix(".datastate").unlink()
    blind = tmp_path / "blind"
    assert fcn_main(["train", str(model), "--out", str(blind), "--restore", str(state)]) == 0
    assert [_losses(blind)[i] for i in range(6, 9)] != [_losses(whole)[i] for i in range(6, 9)]


@pytest.mark.parametrize("damage, message", [
    (lambda text: text[: len(text) // 2], "not a data state file"),
    (lambda text: text.replace('"split": "train"', '"split": "val"'), "is not this layer's"),
    (lambda text: re.sub(r'"position": \d+', '"position": -3', text), "position must be an int >= 0"),
    (lambda text: text.replace('"PCG64"', '"MT19937"'), "bad random generator state"),
])
def test_a_damaged_datastate_is_an_error_naming_it(tmp_path: Path, capsys, damage: Callable[[str], str],
                                                   message: str) -> None:
    model = _experiment(tmp_path, train=dict(randomize=True))
    out = tmp_path / "out"
    assert fcn_main(["train", str(model), "--out", str(out), "--iters", "1"]) == 0
    datastate = out / "snapshot" / "train_iter_1.datastate"
    datastate.write_text(damage(datastate.read_text()))
    state = datastate.with_suffix(".solverstate")
    assert fcn_main(["train", str(model), "--out", str(out), "--restore", str(state)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"fcn train: error: {datastate}") and message in error, error


def test_restore_and_weights_together_are_refused(tmp_path: Path, capsys) -> None:
    model = _experiment(tmp_path)
    weights = tmp_path / "a.caffemodel"
    weights.write_bytes(b"")
    assert fcn_main(["train", str(model), "--weights", str(weights), "--restore", "b.solverstate"]) == 2
    assert "not both" in capsys.readouterr().err


# ----- 6 and 13: param_str values are checked; prefetch threads end with the process -----

@pytest.mark.parametrize("key, literal, expected", [
    ("randomize", "'no'", "True or False"),
    ("skip_bad", "'False'", "True or False"),
    ("mirror", "'false'", "True or False"),
    ("jitter", "1e9", r"an integer in \[0, 128\]"),
    ("jitter", "1000000000", r"an integer in \[0, 128\]"),
    ("mean", "(1e400, 0, 0)", r"3 finite numbers in \[-65535, 65535\]"),
    ("seed", "'abc'", r"an integer in \[0, 9223372036854775807\] or None"),
    ("seed", "-1", r"an integer in \[0, 9223372036854775807\] or None"),
    ("prefetch", "100000", r"an integer in \[0, 64\]"),
    ("workers", "0", r"an integer in \[1, 16\]"),
    ("world_size", "2.0", r"an integer in \[1, 4096\]"),
    ("mask", "3", "one of None, 'foreground', 'background', 'shape'"),
    ("split", "['train']", "a non-empty string"),
])
def test_param_str_values_are_checked_by_type_and_range(tmp_path: Path, key: str, literal: str,
                                                         expected: str) -> None:
    from data_layers.voc import VOCSegDataLayer
    params = {k: v for k, v in write_dataset("voc", tmp_path, n=2, size=(16, 16), seed=0).items()}
    params.setdefault("split", "train")
    params.pop(key, None)
    layer = VOCSegDataLayer()
    layer.param_str = repr(params)[:-1] + f", {key!r}: {literal}}}"
    with pytest.raises(ValueError, match=rf"^VOCSegDataLayer: param_str {key} must be {expected}, got ") as caught:
        layer.setup([], [Blob(), Blob()])
    assert "\n" not in str(caught.value)


def test_deeply_nested_param_str_is_a_one_line_error(tmp_path: Path) -> None:
    params = write_dataset("voc", tmp_path, n=2, size=(16, 16), seed=0)
    from data_layers.voc import VOCSegDataLayer
    for text in (repr(params)[:-1] + ", 'mean': " + "-" * 3000 + "1}", "[" * 300 + "]" * 300):
        layer = VOCSegDataLayer()
        layer.param_str = text
        with pytest.raises(ValueError, match="param_str must be a Python dict literal") as caught:
            layer.setup([], [])
        assert "\n" not in str(caught.value)


SLOW_READS = '''
import sys, time
from data_layers.voc import VOCSegDataLayer

class SlowVOC(VOCSegDataLayer):
    def decode(self, top, path):
        time.sleep(0.5)
        return super().decode(top, path)

layer = SlowVOC()
layer.param_str = repr(dict(voc_dir=sys.argv[1], split="train", prefetch=64, workers=2))
from runner.blob import Blob
tops = [Blob(), Blob()]
layer.setup([], tops)
layer.reshape([], tops)
print("read", flush=True)
'''


def test_prefetch_threads_stop_at_exit(tmp_path: Path) -> None:
    """64 samples queued on 2 threads at 1 s a sample, and the script ends after the first one: the process
    exits at once and cleanly, instead of decoding the whole queue (or crashing in a decoder while the
    interpreter tears down)."""
    params = write_dataset("voc", tmp_path, n=4, size=(16, 16), seed=0)
    (tmp_path / "slow.py").write_text(SLOW_READS)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "slow.py"), params["voc_dir"]], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "read"
    read = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == ""
    assert time.monotonic() - read < 2.0
