"""Solvers against real Caffe (tests/fixtures/caffe_reference/solvers) and their own contracts.

Every reference case is trained for 6 steps exactly as make_fixtures.py drove real Caffe: forward pass
j (counting iter_size sub-passes) sees ``inputs.npz`` data[j]/target[j], written by a before_forward
hook. We compare the learning rate (exact float32), the loss of every forward pass, the raw summed
gradient at on_gradients_ready, the weights after every step, the history after step 6, our
snapshot files, a restore of Caffe's own snapshot, and bitwise resume of our own.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Dict, Iterator, List

import numpy as np
import pytest
import torch

from caffe_cases import ROOT
from netspec import caffe_pb2
from netspec.caffemodel import load_caffemodel, load_solverstate
from netspec.prototxt import write_prototxt
from solvers import updates
from solvers.api import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver,
                         Solver, get_solver)
from solvers.learnable import learnable_params
from solvers.lr_policy import learning_rate
from solvers.parameters import net_source_for_train, net_sources_for_test, read_solver_parameter
from solvers.snapshot import load_state, save_state

SOLVERS = os.path.join(ROOT, "solvers")
with open(os.path.join(SOLVERS, "index.json")) as _f:
    CASES = [entry["name"] for entry in json.load(_f)]
with np.load(os.path.join(SOLVERS, "inputs.npz")) as _inputs:
    DATA, TARGET = _inputs["data"], _inputs["target"]
STEPS = 6
RESUME_AT = 3


@contextmanager
def working_dir(path: str) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def feed(solver: Solver, first_pass: int) -> List[float]:
    """Feed forward pass j with inputs j (from ``first_pass`` on); returns the list of losses seen."""
    counter, losses = [first_pass], []
    net = solver.net
    last = len(net.layers) - 1

    def before(i: int) -> None:
        if i == 0:
            net.blobs["data"].data[...] = DATA[counter[0]]
            net.blobs["target"].data[...] = TARGET[counter[0]]
            counter[0] += 1

    def after(i: int) -> None:
        if i == last:
            losses.append(net.blobs["loss"].data.item())

    net.before_forward(before)
    net.after_forward(after)
    return losses


def params_of(solver: Solver) -> Dict[str, np.ndarray]:
    return {f"{layer}/{i}": blob.data.copy() for layer, blobs in solver.net.params.items()
            for i, blob in enumerate(blobs)}


def case_file(case: str, name: str) -> str:
    return os.path.join(SOLVERS, case, name)


class CaseRun:
    """One case trained like Caffe was, plus the resumed and restored runs derived from it."""

    def __init__(self, case: str, workdir: str) -> None:
        self.case = case
        with open(case_file(case, "meta.json")) as f:
            self.meta = json.load(f)
        with np.load(case_file(case, "params_per_step.npz")) as ref:
            self.ref = {k: ref[k] for k in ref.files}
        self.iter_size = self.meta["iter_size"]
        self.ours = os.path.join(workdir, "ours")
        os.makedirs(self.ours)
        with working_dir(self.ours):
            self.solver = get_solver(case_file(case, "solver.prototxt"))
            self.solver.net.copy_from(case_file(case, "init.caffemodel"))
            self.losses = feed(self.solver, 0)
            self.grads: List[Dict[str, np.ndarray]] = []
            self.solver.add_callback(lambda: None, lambda: self.grads.append(
                {f"{l}/{i}": b.diff.copy() for l, bl in self.solver.net.params.items() for i, b in enumerate(bl)}))
            self.lrs, self.params = [], [params_of(self.solver)]
            for step in range(STEPS):
                self.lrs.append(self.solver.lr)
                self.solver.step(1)
                self.params.append(params_of(self.solver))
                if self.solver.iter in (RESUME_AT, STEPS):
                    self.solver.snapshot()
            self.history_at_6 = [h.clone() for h in self.solver._history]
            self.solver.step(1)
            self.params_at_7 = params_of(self.solver)

    def resumed_from_ours(self) -> Dict[str, np.ndarray]:
        """Restore our step-3 snapshot into a fresh solver and run to step 6."""
        with working_dir(self.ours):
            fresh = get_solver(case_file(self.case, "solver.prototxt"))
            fresh.restore(f"snap_iter_{RESUME_AT}.solverstate")
            feed(fresh, RESUME_AT * self.iter_size)
            fresh.step(STEPS - RESUME_AT)
            return params_of(fresh)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Dict[str, CaseRun]:
    return {case: CaseRun(case, str(tmp_path_factory.mktemp(case))) for case in CASES}


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=what)


# ----- against real Caffe -----

@pytest.mark.parametrize("case", CASES)
def test_learning_rate_per_step_is_caffes_float32(runs, case):
    run = runs[case]
    assert run.lrs == list(run.ref["lr"])


@pytest.mark.parametrize("case", CASES)
def test_trajectory_matches_caffe(runs, case):
    run = runs[case]
    np.testing.assert_allclose(run.losses[:STEPS * run.iter_size], run.ref["loss_per_forward"], rtol=1e-5)
    for step in range(STEPS + 1):
        for key, got in run.params[step].items():
            assert_close(got, run.ref[key][step], f"{case}: {key} after step {step}")


@pytest.mark.parametrize("case", CASES)
def test_raw_gradient_at_on_gradients_ready(runs, case):
    run = runs[case]
    for step in range(STEPS):
        for key, got in run.grads[step].items():
            want = run.ref[f"raw_grad_sum/{key}"][step]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(),
                                       err_msg=f"{case}: {key} at step {step}")


@pytest.mark.parametrize("case", CASES)
def test_history_matches_caffes_solverstate(runs, case):
    run = runs[case]
    with np.load(case_file(case, "solverstate_history.npz")) as ref:
        want = [ref[f"history/{i}"] for i in range(len(ref.files))]
    assert len(run.history_at_6) == len(want) == run.meta["solverstate"]["n_history"]
    for i, (got, expected) in enumerate(zip(run.history_at_6, want)):
        assert_close(got.numpy(), expected, f"{case}: history {i}")


@pytest.mark.parametrize("case", CASES)
def test_our_snapshot_files(runs, case):
    run = runs[case]
    state, history = load_solverstate(os.path.join(run.ours, f"snap_iter_{STEPS}.solverstate"))
    assert state.iter == STEPS
    assert state.current_step == run.meta["solverstate"]["current_step"]
    assert state.learned_net == f"snap_iter_{STEPS}.caffemodel"
    assert len(history) == len(run.history_at_6)
    for got, want in zip(history, run.history_at_6):
        np.testing.assert_array_equal(got, want.numpy())
    _, weights = load_caffemodel(os.path.join(run.ours, f"snap_iter_{STEPS}.caffemodel"))
    for key, want in run.params[STEPS].items():
        layer, index = key.split("/")
        np.testing.assert_array_equal(weights[layer][int(index)], want)
    leftovers = sorted(os.listdir(run.ours))
    assert leftovers == sorted(f"snap_iter_{i}.{ext}" for i in (RESUME_AT, STEPS)
                               for ext in ("caffemodel", "solverstate", "datastate"))  # datastate: ours only


@pytest.mark.parametrize("case", CASES)
def test_restoring_caffes_snapshot_continues_like_caffe(runs, case, tmp_path):
    run = runs[case]
    with working_dir(str(tmp_path)):
        restored = get_solver(case_file(case, "solver.prototxt"))
        restored.restore(case_file(case, f"snap_iter_{STEPS}.solverstate"))
    assert restored.iter == STEPS
    for key, got in params_of(restored).items():
        np.testing.assert_array_equal(got, run.ref[key][STEPS])
    with np.load(case_file(case, "solverstate_history.npz")) as ref:
        for i, h in enumerate(restored._history):
            np.testing.assert_array_equal(h.numpy(), ref[f"history/{i}"])
    assert restored.lr == run.meta["lr_for_iter_6"]
    feed(restored, STEPS * run.iter_size)
    restored.step(1)
    for key, got in params_of(restored).items():
        assert_close(got, run.params_at_7[key], f"{case}: {key} at step 7 after restoring Caffe's snapshot")


@pytest.mark.parametrize("case", CASES)
def test_resume_is_bitwise(runs, case):
    run = runs[case]
    resumed = run.resumed_from_ours()
    for key, want in run.params[STEPS].items():
        np.testing.assert_array_equal(resumed[key], want, err_msg=f"{case}: {key}")


def test_solverstate_writer_reproduces_caffes_bytes(tmp_path):
    source = case_file("adam", f"snap_iter_{STEPS}.solverstate")
    saved = load_state(source)
    copy = str(tmp_path / "copy.solverstate")
    state, _ = load_solverstate(source)
    save_state(copy, saved.iteration, saved.current_step, state.learned_net,
               [torch.from_numpy(np.array(h)) for h in saved.history])
    with open(source, "rb") as a, open(copy, "rb") as b:
        assert a.read() == b.read()


# ----- snapshots are atomic -----

def small_solver(tmp_path, extra: str = "", case: str = "sgd_fixed") -> Solver:
    """A solver.prototxt in ``tmp_path`` over a reference case's train net (found beside it)."""
    text = open(case_file(case, "solver.prototxt")).read()
    net = case_file(case, "train.prototxt")
    text = text.replace('net: "train.prototxt"', f'net: "{net}"') + extra
    path = tmp_path / "solver.prototxt"
    path.write_text(text)
    with working_dir(str(tmp_path)):
        return get_solver(str(path))


@pytest.mark.parametrize("snapshot_format", ["BINARYPROTO", "HDF5"])
def test_failed_snapshot_keeps_the_previous_one(snapshot_format, tmp_path, monkeypatch):
    solver = small_solver(tmp_path, f"\nsnapshot_format: {snapshot_format}\n")
    with working_dir(str(tmp_path)):
        solver.snapshot()
        before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
        solver.net.params["conv1"][0].data[...] += 1

        def disk_full(fd: int) -> None:
            raise OSError(28, "No space left on device")
        monkeypatch.setattr("netspec.atomic.os.fsync", disk_full)
        with pytest.raises(OSError):
            solver.snapshot()
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before
    suffix = ".h5" if snapshot_format == "HDF5" else ""
    assert {f"snap_iter_0.caffemodel{suffix}", f"snap_iter_0.solverstate{suffix}"} <= set(after)


def test_periodic_snapshots_and_no_temp_files(tmp_path):
    solver = small_solver(tmp_path, "snapshot: 2\n")
    feed(solver, 0)
    with working_dir(str(tmp_path)):
        solver.step(4)
    names = sorted(n for n in os.listdir(tmp_path) if n != "solver.prototxt")
    assert names == ["snap_iter_2.caffemodel", "snap_iter_2.datastate", "snap_iter_2.solverstate",
                     "snap_iter_4.caffemodel", "snap_iter_4.datastate", "snap_iter_4.solverstate"]


# ----- solver behaviour -----

def test_test_nets_share_weights_and_report_mean_outputs(tmp_path):
    solver = small_solver(tmp_path, "test_iter: 3\ntest_interval: 2\n")
    assert len(solver.test_nets) == 1
    test_net = solver.test_nets[0]
    assert test_net.phase == caffe_pb2.TEST
    tested_at = []
    test_net.before_forward(lambda i: tested_at.append(solver.iter) if i == 0 else None)
    feed(solver, 0)
    solver.step(5)
    assert tested_at == [0] * 3 + [2] * 3 + [4] * 3
    for name, blobs in solver.net.params.items():
        for mine, theirs in zip(blobs, test_net.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)
    rng = np.random.RandomState(0)
    batches = [(rng.randn(*DATA.shape[1:]).astype(np.float32), rng.randn(*TARGET.shape[1:]).astype(np.float32))
               for _ in range(3)]
    feeder = iter(batches * 2)

    def set_inputs(i: int) -> None:
        if i == 0:
            test_net.blobs["data"].data[...], test_net.blobs["target"].data[...] = next(feeder)
    test_net.before_forward(set_inputs)
    means = solver.test(0)
    direct = np.mean([test_net.forward()["loss"].item() for _ in range(3)])
    assert list(means) == ["loss"]
    np.testing.assert_allclose(float(means["loss"]), direct, rtol=1e-6)


def test_no_test_at_iteration_zero_without_test_initialization(tmp_path):
    solver = small_solver(tmp_path, "test_iter: 1\ntest_interval: 2\ntest_initialization: false\n")
    tested_at = []
    solver.test_nets[0].before_forward(lambda i: tested_at.append(solver.iter) if i == 0 else None)
    feed(solver, 0)
    solver.step(3)
    assert tested_at == [2]


def test_callbacks_wrap_the_passes(tmp_path):
    solver = small_solver(tmp_path, "iter_size: 2\n")
    events = []
    solver.net.before_forward(lambda i: events.append("forward") if i == 0 else None)
    solver.add_callback(lambda: events.append("start"), lambda: events.append("ready"))
    feed(solver, 0)
    solver.step(2)
    assert events == ["start", "forward", "forward", "ready"] * 2


def test_display_logs_like_caffe_and_smooths_the_loss(tmp_path, capsys):
    solver = small_solver(tmp_path, "display: 1\naverage_loss: 2\n")
    losses = feed(solver, 0)
    capsys.readouterr()
    solver.step(3)
    text = capsys.readouterr().err
    assert "sgd_solver.cpp:112] Iteration 0, lr = 0.002\n" in text and "] Iteration 2, lr = 0.002\n" in text
    assert "solver.cpp:258]     Train net output #0: loss = %g (* 1 = %g loss)\n" % (losses[0], losses[0]) in text
    assert "), loss = %g\n" % ((np.float32(losses[1]) + np.float32(losses[2])) / 2) in text
    assert solver.smoothed_loss == pytest.approx((losses[1] + losses[2]) / 2)


def test_random_seed_and_weights_fields(tmp_path):
    init = case_file("sgd_fixed", "init.caffemodel")
    torch.manual_seed(0)
    solver = small_solver(tmp_path, f'weights: "{init}"\n')
    assert torch.initial_seed() == 1701  # the reference solvers' random_seed
    _, weights = load_caffemodel(init)
    np.testing.assert_array_equal(solver.net.params["conv2"][0].data, weights["conv2"][0])


def test_solver_classes_follow_pycaffe(tmp_path):
    assert type(small_solver(tmp_path, case="adam")) is AdamSolver
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    solver = small_solver(legacy, "", case="sgd_fixed")
    assert type(solver) is SGDSolver
    text = (legacy / "solver.prototxt").read_text().replace('type: "SGD"', "solver_type: NESTEROV")
    (legacy / "solver.prototxt").write_text(text)
    with working_dir(str(legacy)):
        assert type(get_solver("solver.prototxt")) is NesterovSolver
        forced = AdaDeltaSolver("solver.prototxt")
    assert forced.type == "AdaDelta" and len(forced._history) == 8
    assert {cls.kind for cls in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver,
                                 AdamSolver)} == set(updates.RULES)


def test_restore_refuses_another_solvers_state(tmp_path):
    solver = small_solver(tmp_path)
    with pytest.raises(ValueError, match="history"):
        solver.restore(case_file("adam", f"snap_iter_{STEPS}.solverstate"))
    assert solver.iter == 0


# ----- pure parts -----

def test_multistep_advances_at_most_one_step_per_call():
    param = caffe_pb2.SolverParameter(base_lr=1, lr_policy="multistep", gamma=0.5, stepvalue=[1, 2, 3])
    rate, step = learning_rate(param, 10, 0)
    assert (rate, step) == (0.5, 1)
    rate, step = learning_rate(param, 10, step)
    assert (rate, step) == (0.25, 2)


def test_step_policy_records_its_step_and_bad_policies_fail():
    param = caffe_pb2.SolverParameter(base_lr=1, lr_policy="step", gamma=0.1, stepsize=3)
    assert learning_rate(param, 7, 0)[1] == 2
    with pytest.raises(ValueError, match="stepsize"):
        learning_rate(caffe_pb2.SolverParameter(lr_policy="step", gamma=0.1), 0, 0)
    with pytest.raises(ValueError, match="unknown learning rate policy 'cosine'"):
        learning_rate(caffe_pb2.SolverParameter(lr_policy="cosine"), 0, 0)
    assert learning_rate(caffe_pb2.SolverParameter(base_lr=1, lr_policy="sigmoid", gamma=100, stepsize=1),
                         0, 0)[0] == 0.0


def write_solver(tmp_path, **fields) -> str:
    path = tmp_path / "my_solver.prototxt"
    write_prototxt(path, caffe_pb2.SolverParameter(**fields))
    return str(path)


def test_solver_file_upgrades_and_defaults(tmp_path):
    param = read_solver_parameter(write_solver(tmp_path, solver_type=caffe_pb2.SolverParameter.ADAM))
    assert param.type == "Adam" and not param.HasField("solver_type")
    assert param.snapshot_prefix == str(tmp_path / "my_solver")
    (tmp_path / "snaps").mkdir()
    param = read_solver_parameter(write_solver(tmp_path, snapshot_prefix=str(tmp_path / "snaps")))
    assert param.snapshot_prefix == str(tmp_path / "snaps" / "my_solver")
    with pytest.raises(ValueError, match="cannot both be given"):
        read_solver_parameter(write_solver(tmp_path, type="SGD", solver_type=caffe_pb2.SolverParameter.ADAM))


def test_net_fields_follow_caffes_rules(tmp_path):
    (tmp_path / "nets").mkdir()
    net_file = tmp_path / "nets" / "train.prototxt"
    write_prototxt(net_file, caffe_pb2.NetParameter(name="n", state=caffe_pb2.NetState(level=3, stage=["own"])))
    param = caffe_pb2.SolverParameter(net="train.prototxt", test_iter=[1, 1], test_interval=5,
                                      train_state=caffe_pb2.NetState(stage=["extra"]),
                                      test_state=[caffe_pb2.NetState(stage=["a"]), caffe_pb2.NetState(level=1)])
    train = net_source_for_train(param, str(tmp_path / "nets"))
    assert (train.net, train.phase, train.level, train.stages) == (str(net_file), caffe_pb2.TRAIN, 3, ["extra"])
    tests = net_sources_for_test(param, str(tmp_path / "nets"))
    assert [(t.phase, t.level, t.stages) for t in tests] == [(caffe_pb2.TEST, 3, ["a"]), (caffe_pb2.TEST, 1, [])]
    with pytest.raises(FileNotFoundError, match="looked in the working directory"):
        net_source_for_train(param, str(tmp_path))
    with pytest.raises(ValueError, match="must specify a train net"):
        net_source_for_train(caffe_pb2.SolverParameter(), None)
    with pytest.raises(ValueError, match="more than one"):
        net_source_for_train(caffe_pb2.SolverParameter(net=str(net_file), train_net=str(net_file)), None)
    with pytest.raises(ValueError, match="test_state"):
        net_sources_for_test(caffe_pb2.SolverParameter(net=str(net_file), test_iter=[1], test_interval=1,
                                                   test_state=[caffe_pb2.NetState()] * 2), None)
    with pytest.raises(ValueError, match="test_interval"):
        net_sources_for_test(caffe_pb2.SolverParameter(net=str(net_file), test_iter=[1]), None)
    with pytest.raises(ValueError, match="test_iter must be specified"):
        net_sources_for_test(caffe_pb2.SolverParameter(test_net=[str(net_file)], test_interval=1), None)


SHARED_NET = """
name: "shared"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }
layer { name: "a" type: "Convolution" bottom: "data" top: "a"
        param { name: "w" } param { name: "b" lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "a" top: "b"
        param { name: "w" lr_mult: 3 } param { name: "b" }
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "c" type: "Convolution" bottom: "b" top: "c" param { lr_mult: 0 }
        convolution_param { num_output: 1 kernel_size: 1 bias_term: false } }
"""


def test_learnable_params_in_caffes_order_with_shared_multipliers(tmp_path):
    from runner.net import Net
    path = tmp_path / "shared.prototxt"
    path.write_text(SHARED_NET)
    found = learnable_params(Net(str(path), caffe_pb2.TRAIN))
    assert [(p.name, p.lr_mult, p.decay_mult) for p in found] == [("a/0", 3, 1), ("a/1", 2, 0), ("c/0", 0, 1)]
    path.write_text(SHARED_NET.replace('param { name: "b" }', 'param { name: "b" lr_mult: 5 }'))
    with pytest.raises(ValueError, match="mismatched lr_mult"):
        learnable_params(Net(str(path), caffe_pb2.TRAIN))


def test_clipping_leaves_small_and_zero_gradients_alone():
    grads = [torch.zeros(3), torch.zeros(2)]
    updates.clip_gradients(grads, 0.0)
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
    grads = [torch.tensor([3.0]), torch.tensor([4.0])]
    norm = updates.clip_gradients(grads, 1.0)
    assert float(norm) == 5.0 and torch.allclose(torch.cat(grads), torch.tensor([0.6, 0.8]))
    with pytest.raises(ValueError, match="regularization type"):
        updates.regularize(grads, grads, [1.0, 1.0], "L3")


def test_hyper_parameter_checks():
    with pytest.raises(ValueError, match="Momentum cannot be used with AdaGrad"):
        updates.check_hyper_parameters("AdaGrad", caffe_pb2.SolverParameter(momentum=0.9))
    with pytest.raises(ValueError, match="rms_decay"):
        updates.check_hyper_parameters("RMSProp", caffe_pb2.SolverParameter(rms_decay=1.0))
