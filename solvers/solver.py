"""pycaffe's Solver on the runner: build the nets a solver.prototxt names, train, test, snapshot, restore.

One ``step`` is Caffe's Solver::Step iteration: zero the parameter diffs; run the test nets when
``test_interval`` says so; call the ``on_start`` callbacks; accumulate ``iter_size`` forward/backward
passes; log the smoothed loss every ``display`` iterations; call ``on_gradients_ready``; apply the
update (learning rate, clipping, normalization, weight decay, the solver type's rule, ``w -= diff``);
count the iteration; snapshot every ``snapshot`` iterations. Same order, same float32 arithmetic, same
file formats, so a run matches real Caffe step for step and moves between the two via snapshots.

Beyond Caffe, a snapshot also records where the data layers are (``solvers.datastate``, captured at the
start of every iteration, so that a stop in the middle of one snapshots the state it started from) and
whether its weights are all finite; restore reads both back, which makes a resumed run exact anywhere.
The weight update and the iteration count are one ``runner.interrupt.critical`` section: a forced
stop never leaves weights updated for an iteration that was not counted.

The update runs on the parameter tensors where they live (see solvers.updates); the only host
synchronisation per iteration is the loss the net's forward reports.

Everything Caffe's Solver and SGDSolver log is logged with the same words, numbers and file:line
(netspec.glog), so a training log here reads, and parses (tools/extra/parse_log.py), like Caffe's.

As Caffe's Solver, it asks an action function (``set_action_function``, Caffe's SetActionFunction, which
the ``caffe`` tool wires to SIGINT/SIGHUP) after every update and while testing whether to snapshot now
or to stop early; ``solve`` then snapshots and ends with "Optimization stopped early."
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
import torch

from netspec import caffe_pb2, glog
from netspec.hdf5 import is_hdf5
from runner import interrupt
from runner.device import set_random_seed
from runner.net import Net
from runner.weights import save_weights_to_hdf5
from solvers import datastate
from solvers.learnable import learnable_params
from solvers.lr_policy import learning_rate
from solvers.parameters import (NetSource, net_source_for_train, net_sources_for_test, read_solver_parameter,
                                resolve_path, solver_type)
from solvers.snapshot import load_state, save_state, snapshot_name
from solvers.updates import RULES, Hyper, check_hyper_parameters, clip_gradients, f32, normalize, regularize

PathLike = Union[str, "os.PathLike[str]"]

log = logging.getLogger(__name__)

#: What an action function may ask for (Caffe's SolverAction): nothing, a snapshot now, or a snapshot and stop.
ACTION_NONE, ACTION_STOP, ACTION_SNAPSHOT = "none", "stop", "snapshot"
SOLVER_ACTIONS = (ACTION_STOP, ACTION_SNAPSHOT, ACTION_NONE)


class Solver:
    """A Caffe solver built from a solver.prototxt (pycaffe's ``caffe.get_solver`` / ``caffe.SGDSolver``...).

    The update rule is the file's ``type`` unless a subclass fixes it, as pycaffe's ``SGDSolver(file)``
    builds an SGD solver whatever the file says.
    """

    #: The solver type this class always builds; None: the one the file names.
    kind: Optional[str] = None

    def __init__(self, solver_file: PathLike, param: Optional["caffe_pb2.SolverParameter"] = None) -> None:
        """``param``: the file's parameter already read (``read_solver_parameter``) and adjusted, as the
        ``caffe`` tool sets train_state and weights from its flags; paths in it still resolve from
        ``solver_file``'s folder. None reads the file."""
        path = os.fspath(solver_file)
        self._param = read_solver_parameter(path) if param is None else param
        glog.info("solver.cpp:45", "Initializing solver from parameters: \n%s", self._param)
        base_dir = os.path.dirname(os.path.abspath(path))
        self._type = self.kind or solver_type(self._param)
        check_hyper_parameters(self._type, self._param)
        if self._param.average_loss < 1:
            raise ValueError(f"{path}: average_loss should be >= 1 (got {self._param.average_loss})")
        if self._param.iter_size < 1:
            raise ValueError(f"{path}: iter_size should be >= 1 (got {self._param.iter_size})")
        learning_rate(self._param, 0, 0)  # an unknown policy or a bad stepsize fails now, not at step 1
        _check_snapshot_prefix(self._param)
        if self._param.random_seed >= 0:
            set_random_seed(self._param.random_seed)
        weights = [(name.strip(), resolve_path(name.strip(), base_dir, "weights")) for entry in self._param.weights
                   for name in entry.split(",")]
        train = net_source_for_train(self._param, base_dir)
        _log_train_net(train.origin)
        self._net = _build(train, weights)
        self._test_nets = []
        for i, source in enumerate(net_sources_for_test(self._param, base_dir)):
            glog.info("solver.cpp:190", "Creating test net (#%d) specified by %s", i, source.origin)
            self._test_nets.append(_build(source, weights))
        for test_net in self._test_nets:  # so that test_nets[i].params are the train net's from the start
            test_net.graph.share_params_with(self._net.graph)
        glog.info("solver.cpp:57", "Solver scaffolding done.")
        self._iter = 0
        self._current_step = 0
        self._rule = RULES[self._type]
        self._hyper = Hyper.of(self._param)
        self._learnable = learnable_params(self._net)
        self._history = [torch.zeros_like(p.blob.tensor()).detach()
                         for _ in range(self._rule.history_per_param) for p in self._learnable]
        self._callbacks: List[Tuple[Callable[[], Any], Callable[[], Any]]] = []
        self._losses: List[np.float32] = []
        self._smoothed_loss = np.float32(0)
        self._iterations_last = 0
        self._stateful = datastate.stateful_layers(self._net)
        self._boundary: Optional[Tuple[int, datastate.Captured]] = None  # (iteration, state at its start)
        self._snapshots: List[Tuple[int, str, bool]] = []  # (iteration, solverstate, weights all finite)
        self._action: Optional[Callable[[], str]] = None
        self._requested_early_exit = False

    # ----- pycaffe attributes -----
    @property
    def net(self) -> Net:
        """The train net."""
        return self._net

    @property
    def test_nets(self) -> List[Net]:
        """The test nets, sharing the train net's weights."""
        return list(self._test_nets)

    @property
    def iter(self) -> int:
        """Number of updates applied so far."""
        return self._iter

    @property
    def param(self) -> "caffe_pb2.SolverParameter":
        """A copy of the (upgraded) SolverParameter this solver runs."""
        copy = caffe_pb2.SolverParameter()
        copy.CopyFrom(self._param)
        return copy

    @property
    def type(self) -> str:
        """The solver type ("SGD", "Adam", ...)."""
        return self._type

    @property
    def lr(self) -> float:
        """The learning rate of the next update. Like pycaffe's, reading it runs the policy, which for
        ``multistep`` may advance its step (harmless right before a step, which would do the same)."""
        return self._learning_rate()

    def _learning_rate(self) -> float:
        """Caffe's GetLearningRate: the policy's rate now, logging a multistep advance."""
        rate, step = learning_rate(self._param, self._iter, self._current_step)
        if step != self._current_step and self._param.lr_policy == "multistep":
            glog.info("sgd_solver.cpp:50", "MultiStep Status: Iteration %d, step = %d", self._iter, step)
        self._current_step = step
        return rate

    @property
    def smoothed_loss(self) -> float:
        """The train loss averaged over the last ``average_loss`` iterations of the current ``step`` call."""
        return float(self._smoothed_loss)

    def add_callback(self, on_start: Callable[[], Any], on_gradients_ready: Callable[[], Any]) -> None:
        """Call ``on_start()`` at the start of each iteration and ``on_gradients_ready()`` once its gradients
        are accumulated, before the update (pycaffe's Solver.add_callback)."""
        self._callbacks.append((on_start, on_gradients_ready))

    def set_action_function(self, action: Optional[Callable[[], str]]) -> None:
        """Ask ``action()`` after every update and every test pass what to do: ``ACTION_NONE``,
        ``ACTION_SNAPSHOT`` (snapshot now) or ``ACTION_STOP`` (stop early; ``solve`` snapshots). Caffe's
        SetActionFunction; None: never ask."""
        self._action = action

    def _requested_action(self) -> str:
        return self._action() if self._action is not None else ACTION_NONE

    def share_weights(self, net: Net) -> None:
        """Make ``net`` use the train net's weights for the layers both have."""
        net.share_with(self._net)

    # ----- training -----
    def solve(self, resume_file: Optional[PathLike] = None) -> None:
        """Train to ``max_iter`` (Caffe's Solver::Solve, pycaffe's ``solver.solve()``): restore ``resume_file``
        if given; step; snapshot unless the last iteration just did (``snapshot_after_train``); then, as
        Caffe, one more forward pass to log the final smoothed loss where ``display`` asks for it, and a
        last test where ``test_interval`` does."""
        self.log_solving()
        self._requested_early_exit = False
        if resume_file is not None:
            glog.info("solver.cpp:296", "Restoring previous solver status from %s", os.fspath(resume_file))
            self.restore(resume_file)
        start_iter = self._iter
        self.step(self._param.max_iter - self._iter)
        if self._param.snapshot_after_train and (not self._param.snapshot or self._iter % self._param.snapshot):
            self.snapshot()
        if self._requested_early_exit:
            glog.info("solver.cpp:311", "Optimization stopped early.")
            return
        if self._param.display and self._iter % self._param.display == 0:
            with torch.no_grad():
                loss = self._net._forward(0, len(self._net.graph.slots) - 1)
            self._update_smoothed_loss(loss, start_iter)
            glog.info("solver.cpp:327", "Iteration %d, loss = %g", self._iter, glog.real(self._smoothed_loss))
        if self._param.test_interval and self._iter % self._param.test_interval == 0:
            self.test_all()
        self.log_done()

    def log_solving(self) -> None:
        """The lines Caffe's Solve starts with (log parsers time a run from "Solving"); for training loops
        of their own, as ``solve`` logs them."""
        glog.info("solver.cpp:289", "Solving %s", self._net.name)
        glog.info("solver.cpp:290", "Learning Rate Policy: %s", self._param.lr_policy)

    def log_done(self) -> None:
        """The line Caffe's Solve ends with."""
        glog.info("solver.cpp:332", "Optimization Done.")

    def step(self, iters: int) -> None:
        """Run ``iters`` training iterations."""
        start_iter = self._iter
        stop_iter = self._iter + int(iters)
        self._losses = []
        self._smoothed_loss = np.float32(0)
        display = self._param.display
        started = time.perf_counter()
        while self._iter < stop_iter:
            self._boundary = (self._iter, datastate.capture(self._stateful))
            self._net.clear_param_diffs()
            interval = self._param.test_interval
            if interval and self._iter % interval == 0 and (self._iter > 0 or self._param.test_initialization):
                self.test_all()
                if self._requested_early_exit:  # stop was requested while testing
                    break
            for on_start, _ in self._callbacks:
                on_start()
            loss = np.float32(0)
            for _ in range(self._param.iter_size):
                pass_loss = np.float32(self._forward_backward())
                with np.errstate(all="ignore"):  # a non-finite loss is the training loop's to report
                    loss += pass_loss  # in float32 and in order, as Caffe sums them
            self._update_smoothed_loss(loss / np.float32(self._param.iter_size), start_iter)
            if display and self._iter % display == 0:
                started = self._log_progress(started)
            for _, on_gradients_ready in self._callbacks:
                on_gradients_ready()
            with interrupt.critical():
                self.apply_update()
                self._iter += 1
            request = self._requested_action()
            if (self._param.snapshot and self._iter % self._param.snapshot == 0) or request == ACTION_SNAPSHOT:
                with interrupt.finishing():  # a stop request waits for the snapshot under way
                    self.snapshot()
            if request == ACTION_STOP:
                self._requested_early_exit = True
                break

    def apply_update(self) -> None:
        """Update the train net's weights from their accumulated diffs (Caffe's ApplyUpdate). Does not count
        an iteration, as in pycaffe; ``step`` does."""
        rate = self._learning_rate()
        if self._param.display and self._iter % self._param.display == 0:
            glog.info("sgd_solver.cpp:112", "Iteration %d, lr = %g", self._iter, glog.real(rate))
        if not self._learnable:
            return
        weights = [p.blob.tensor() for p in self._learnable]
        diffs = [p.blob.diff_tensor() for p in self._learnable]
        self._keep_history_on(weights[0].device)
        with torch.no_grad():
            norm = clip_gradients(diffs, self._param.clip_gradients)
            if norm is not None and glog.enabled() and float(norm) > self._param.clip_gradients:
                clip = np.float32(self._param.clip_gradients)
                glog.info("sgd_solver.cpp:99", "Gradient clipping: scaling down gradients (L2 norm %g > %g) by scale "
                          "factor %g", glog.real(float(norm)), glog.real(clip), glog.real(clip / np.float32(float(norm))))
            normalize(diffs, self._param.iter_size)
            regularize(diffs, weights, [f32(self._param.weight_decay * p.decay_mult) for p in self._learnable],
                       self._param.regularization_type)
            self._rule.compute(diffs, self._history, [f32(rate * p.lr_mult) for p in self._learnable],
                               self._hyper, self._iter)
            torch._foreach_sub_(weights, diffs)

    def _forward_backward(self) -> float:
        """One forward and backward pass of the train net; parameter diffs accumulate. Blob diffs are not
        filled (nothing in training reads them), which saves autograd that work."""
        last = len(self._net.graph.slots) - 1
        loss = self._net._forward(0, last)
        self._net._backward(last, 0, retain_graph=False, blob_diffs=False)
        return loss

    def _update_smoothed_loss(self, loss: float, start_iter: int) -> None:
        """Caffe's running mean of the last ``average_loss`` losses, in float32 as Caffe keeps it."""
        window = self._param.average_loss
        loss = np.float32(loss)
        with np.errstate(all="ignore"):  # a non-finite loss is the training loop's to report
            if len(self._losses) < window:
                self._losses.append(loss)
                size = np.float32(len(self._losses))
                self._smoothed_loss = (self._smoothed_loss * (size - 1) + loss) / size
            else:
                index = (self._iter - start_iter) % window
                self._smoothed_loss += (loss - self._losses[index]) / np.float32(window)
                self._losses[index] = loss

    def _log_progress(self, started: float) -> float:
        """Caffe's display lines: speed and smoothed loss, then every element of every train net output.
        Returns when the next lapse starts."""
        if glog.enabled():
            lapse = np.float32(time.perf_counter() - started)
            speed = np.float32(self._iter - self._iterations_last) / (lapse or np.float32(1))
            glog.info("solver.cpp:239", "Iteration %d (%g iter/s, %gs/%d iters), loss = %g", self._iter,
                      glog.real(speed), glog.real(lapse), self._param.display, glog.real(self._smoothed_loss))
            _log_outputs(self._net, "solver.cpp:258", "Train", self._net.outputs,
                         [self._net.blobs[name].tensor().detach().cpu().numpy().ravel() for name in self._net.outputs])
        self._iterations_last = self._iter
        return time.perf_counter()

    def _keep_history_on(self, device: torch.device) -> None:
        """Follow the net when ``set_mode_gpu``/``set_mode_cpu`` moved it since the last update."""
        if self._history and self._history[0].device != device:
            self._history = [h.to(device) for h in self._history]

    # ----- testing -----
    def test_all(self) -> List["OrderedDict[str, np.ndarray]"]:
        """Run every test net (``test`` for each) until a stop is requested; returns their mean outputs."""
        results = []
        for i in range(len(self._test_nets)):
            if self._requested_early_exit:
                break
            results.append(self.test(i))
        return results

    def test(self, index: int = 0) -> "OrderedDict[str, np.ndarray]":
        """Run test net ``index`` for its ``test_iter`` forward passes on the current weights and return each
        output blob averaged over the passes (Caffe's Solver::Test), logging them as Caffe does; nothing when a
        stop was requested meanwhile (``set_action_function``)."""
        test_net = self._test_nets[index]
        iterations = self._param.test_iter[index]
        glog.info("solver.cpp:347", "Iteration %d, Testing net (#%d)", self._iter, index)
        test_net.share_with(self._net)
        last = len(test_net.graph.slots) - 1
        totals: List[torch.Tensor] = []
        loss = 0.0
        with torch.no_grad():
            for i in range(iterations):
                if self._test_interrupted():
                    break
                loss += test_net._forward(0, last)
                outputs = [test_net.blobs[name].tensor().detach().double() for name in test_net.outputs]
                totals = outputs if i == 0 else [t + o for t, o in zip(totals, outputs)]
        if self._requested_early_exit:
            glog.info("solver.cpp:396", "Test interrupted.")
            return OrderedDict()
        if self._param.test_compute_loss:
            glog.info("solver.cpp:401", "Test loss: %g", glog.real(loss / iterations))
        means = OrderedDict((name, (total / iterations).cpu().numpy()) for name, total in zip(test_net.outputs, totals))
        _log_outputs(test_net, "solver.cpp:414", "Test", list(means), [m.ravel() for m in means.values()])
        return means

    def _test_interrupted(self) -> bool:
        """Caffe's check between test passes: serve every pending request, say whether to stop testing."""
        while True:
            request = self._requested_action()
            if request == ACTION_SNAPSHOT:
                self.snapshot()
            elif request == ACTION_STOP:
                self._requested_early_exit = True
            else:
                return self._requested_early_exit

    # ----- snapshots -----
    def snapshot(self) -> None:
        """Write ``<prefix>_iter_<iter>.caffemodel`` and ``.solverstate``, or with ``snapshot_format: HDF5``
        ``.caffemodel.h5`` and ``.solverstate.h5`` (each atomically), and the ``.datastate`` beside them."""
        hdf5 = self._param.snapshot_format == caffe_pb2.SolverParameter.HDF5
        if self._param.snapshot_diff and not hdf5:
            raise ValueError("snapshot_diff is supported with snapshot_format: HDF5 only: binary snapshots hold "
                             "weights only")
        model = snapshot_name(self._param.snapshot_prefix, self._iter, ".caffemodel" + (".h5" if hdf5 else ""))
        state = snapshot_name(self._param.snapshot_prefix, self._iter, ".solverstate" + (".h5" if hdf5 else ""))
        if hdf5:
            glog.info("solver.cpp:474", "Snapshotting to HDF5 file %s", model)
            save_weights_to_hdf5(self._net.graph, model, write_diff=self._param.snapshot_diff)
        else:
            glog.info("solver.cpp:464", "Snapshotting to binary proto file %s", model)
            self._net.save(model)
        finite = self._save_data_state(state)
        if hdf5:
            glog.info("sgd_solver.cpp:296", "Snapshotting solver state to HDF5 file %s", state)
        else:
            glog.info("sgd_solver.cpp:284", "Snapshotting solver state to binary proto file %s", state)
        save_state(state, self._iter, self._current_step, model, self._history, hdf5=hdf5)
        self._snapshots.append((self._iter, state, finite))

    def _save_data_state(self, solverstate: str) -> bool:
        """Write the datastate that goes with ``solverstate``; returns whether the weights are all finite.
        Mid-iteration (a stop cut it short) it is the state that iteration started from."""
        boundary = self._boundary
        captured = boundary[1] if boundary is not None and boundary[0] == self._iter \
            else datastate.capture(self._stateful)
        bad = self._non_finite_layers()
        if bad:
            log.warning("snapshot at iteration %d: the weights of %s are not all finite; do not resume from it",
                        self._iter, ", ".join(bad))
        datastate.save(datastate.datastate_path(solverstate), captured, finite_weights=not bad)
        return not bad

    def _non_finite_layers(self) -> List[str]:
        """Layers with a NaN or infinite weight (one device sync per parameter blob)."""
        return sorted({p.layer for p in self._learnable if not bool(torch.isfinite(p.blob.tensor()).all())})

    def finite_snapshot_before(self, iteration: int) -> Optional[str]:
        """The solverstate of the latest snapshot (written or restored by this solver) taken before
        ``iteration`` whose weights are all finite; None when there is none."""
        earlier = [(it, path) for it, path, finite in self._snapshots if finite and it < iteration]
        return max(earlier)[1] if earlier else None

    def has_snapshot(self, iteration: int) -> bool:
        """Whether this solver wrote (or restored from) a snapshot of ``iteration``."""
        return any(it == iteration for it, _, _ in self._snapshots)

    def restore(self, state_file: PathLike) -> None:
        """Continue from a ``.solverstate`` or ``.solverstate.h5`` (ours or real Caffe's): its iteration, lr
        policy step, history, and the weights of the caffemodel it names; with the ``.datastate`` beside it
        (ours), the data layers' positions and the generators too."""
        path = os.fspath(state_file)
        saved = load_state(path)
        data_path = datastate.datastate_path(path)
        data = datastate.load(data_path)
        if len(saved.history) != len(self._history):
            raise ValueError(f"{path}: incorrect length of history blobs: the file has {len(saved.history)}, "
                             f"this {self._type} solver on net '{self._net.name}' keeps {len(self._history)}")
        for i, (mine, theirs) in enumerate(zip(self._history, saved.history)):
            if theirs.size != mine.numel():
                raise ValueError(f"{path}: history blob {i} has shape {tuple(theirs.shape)}, the solver's has "
                                 f"{tuple(mine.shape)} (a solverstate of another net?)")
        if saved.learned_net:
            self._net.copy_from(saved.learned_net)
        self._iter = saved.iteration
        self._current_step = saved.current_step
        if not is_hdf5(path):  # RestoreSolverStateFromBinaryProto says so; the HDF5 restore says nothing
            glog.info("sgd_solver.cpp:336", "SGDSolver: restoring history")
        with torch.no_grad():
            for mine, theirs in zip(self._history, saved.history):
                mine.copy_(torch.from_numpy(np.array(theirs, dtype=np.float32).reshape(tuple(mine.shape))))
        self._boundary = None
        if data is not None:
            datastate.apply(data, self._stateful, data_path)
        elif self._stateful:
            log.warning("%s: no %s beside it, so the data layers start from their first sample; the run "
                        "continues as the original only if it stopped at an epoch boundary", path, data_path)
        self._snapshots.append((self._iter, path, not self._non_finite_layers()))


#: Where Caffe's InitTrainNet logs each way of giving the train net.
_TRAIN_NET_LOG = {"train_net_param": "solver.cpp:88", "train_net": "solver.cpp:92", "net_param": "solver.cpp:97",
                  "net": "solver.cpp:102"}


def _log_train_net(origin: str) -> None:
    """Caffe's InitTrainNet line for the field the train net comes from."""
    field = origin.split(" ")[0]
    if field.endswith("_param"):
        glog.info(_TRAIN_NET_LOG[field], "Creating training net specified in %s.", field)
    else:
        glog.info(_TRAIN_NET_LOG[field], "Creating training net from %s", origin)


def _build(source: NetSource, weights: List[Tuple[str, str]]) -> Net:
    """One of the solver's nets, with the ``weights`` files (as given, as found) copied in."""
    net = Net(source.net, source.phase, level=source.level, stages=source.stages)
    for given, path in weights:
        glog.info("solver.cpp:72", "Finetuning from %s", given)
        net.copy_from(path)
    return net


def _check_snapshot_prefix(param: "caffe_pb2.SolverParameter") -> None:
    """Fail before training, not at the first snapshot hours later, when snapshots cannot be written."""
    if not param.snapshot:
        return
    folder = os.path.dirname(param.snapshot_prefix) or "."
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write to snapshot prefix '{param.snapshot_prefix}': make sure the folder "
                         f"'{folder}' exists and is writable")


def _log_outputs(net: Net, where: str, which: str, names: List[str], values: List[np.ndarray]) -> None:
    """Caffe's "<which> net output #k: name = value (* weight = weighted loss)" lines, in float32 as Caffe
    computes them."""
    weights = net.blob_loss_weights
    k = 0
    for name, flat in zip(names, values):
        weight = np.float32(weights.get(name, 0.0))
        for value in flat.astype(np.float32):
            extra = " (* %g = %g loss)" % (glog.real(weight), glog.real(weight * value)) if weight else ""
            glog.info(where, "    %s net output #%d: %s = %g%s", which, k, name, glog.real(value), extra)
            k += 1
