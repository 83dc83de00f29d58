"""The solve loop every ``models/*/solve.py`` and ``fcn train`` share.

It is the FCN release's solve.py made robust: load initial weights (or run surgery), step in chunks,
score mean IU on the validation net every N iterations (the test net shares the train net's weights),
and keep a record of everything: a JSONL log (smoothed loss, lr, seconds, data-wait seconds, metrics),
a PNG of the curves, and the best-mean-IU weights. Faults do not lose work:

* SIGINT/SIGTERM snapshot and return (Caffe's default action) within about a second whatever the run is
  doing (``runner.interrupt``): waiting for data (a stalled read is abandoned, naming the file), scoring
  (stopped at the next image, the partial score discarded), writing a snapshot (finished first); a second
  signal stops at once. The result's ``exit_status`` is 128 + the signal, as a shell reports it.
* A non-finite loss stops before the bad update with an error naming the iteration and the last snapshot
  whose weights are all finite (the latest one may already hold huge or NaN weights).
* Every file is written atomically; a failed write (a full disk) is one error naming the file, and the
  temporary files of runs that were killed outright are cleared when a run starts in their folder.

Under ``torchrun`` the ranks train data-parallel and rank 0 alone logs, scores and snapshots.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from netspec import caffe_pb2, glog
from netspec.atomic import remove_stale_temps, write_atomically
from runner import interrupt
from runner.device import set_device, set_mode_gpu
from solvers import distributed
from solvers.api import get_solver
from solvers.learnable import learnable_params
from solvers.score import format_scores, score_heads, seg_tests
from solvers.solver import Solver

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss; the weights were not updated with it."""


@dataclass
class TrainConfig:
    """What to train and how to watch it. Paths default to the solver file's conventions."""
    solver_path: str
    weights: Sequence[str] = ()
    init: Optional[Callable[[Solver], None]] = None
    restore: Optional[str] = None
    iters: Optional[int] = None
    score_every: Optional[int] = None
    out_dir: Optional[str] = None
    #: What to score, each ``(score blob, label blob, present_only)`` in a pass of its own (as the release's
    #: SIFT Flow solve.py scored both heads); the first picks the best weights, the others are logged with a
    #: ``head`` key. None: the heads the release's names give (``solvers.score.score_heads``).
    heads: Optional[Sequence[Tuple[str, str, bool]]] = None
    save_predictions: bool = False
    progress: bool = True
    label: str = "train"


@dataclass
class TrainResult:
    """How the run ended and where its records are."""
    iterations: int
    interrupted: bool
    log_path: str
    plot_path: Optional[str]
    best_weights: Optional[str]
    best_mean_iu: Optional[float]
    scores: List[Dict[str, Any]] = field(default_factory=list)
    unset_parameters: List[str] = field(default_factory=list)
    #: The signal that stopped the run (SIGINT, SIGTERM), None when it ran to its end.
    stop_signal: Optional[int] = None
    #: False on the other ranks of a torchrun job: only rank 0 reports.
    is_main: bool = True

    @property
    def exit_status(self) -> int:
        """What a command that ran this training exits with: 0, or 128 + the signal (130 for Ctrl-C)."""
        return 0 if self.stop_signal is None else 128 + int(self.stop_signal)


def unset_parameters(net: Any) -> List[str]:
    """Learnable weights (blob 0) still holding one constant value, the classic trap where a net predicts
    only background because no weights file or surgery set them. Score layers start at zero on purpose,
    and Scale layers (the at-once nets' fixed skip scales) are constant by design."""
    suspicious = []
    types = {name: layer.type for name, layer in net.layer_dict.items()}
    for entry in learnable_params(net):
        if entry.index != 0 or entry.layer.startswith("score") or types.get(entry.layer) == "Scale":
            continue
        values = entry.blob.tensor()
        if values.numel() and bool((values == values.reshape(-1)[0]).all()):
            suspicious.append(entry.layer)
    return suspicious


class _Records:
    """The JSONL log, the curves PNG and the best weights of one run (rank 0 only)."""

    def __init__(self, out_dir: str) -> None:
        os.makedirs(out_dir, exist_ok=True)
        self.log_path = os.path.join(out_dir, "train_log.jsonl")
        self.plot_path = os.path.join(out_dir, "curves.png")
        self.best_path = os.path.join(out_dir, "best.caffemodel")
        self.losses: List[tuple] = []
        self.scores: List[Dict[str, Any]] = []
        self.best: Optional[float] = None

    def write(self, record: Dict[str, Any]) -> None:
        with open(self.log_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def loss(self, iteration: int, loss: float, lr: float, seconds: float, wait: float) -> None:
        self.losses.append((iteration, loss))
        self.write({"iter": iteration, "loss": loss, "lr": lr, "seconds": round(seconds, 3),
                    "data_wait_seconds": round(wait, 3)})

    def score(self, iteration: int, metrics: Dict[str, Any], net: Any) -> None:
        record = {"iter": iteration, **{k: v for k, v in metrics.items()}}
        self.scores.append(record)
        self.write(record)
        mean_iu = metrics["mean_iu"]
        if mean_iu == mean_iu and (self.best is None or mean_iu > self.best):
            self.best = mean_iu
            net.save(self.best_path)
            write_atomically(self.best_path + ".json", json.dumps({"iter": iteration, **metrics}, indent=1).encode())
        self.plot()

    def plot(self) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
        if self.losses:
            its, values = zip(*self.losses)
            top.plot(its, values)
        top.set_ylabel("smoothed loss")
        if self.scores:
            bottom.plot([s["iter"] for s in self.scores], [100 * s["mean_iu"] for s in self.scores], marker="o")
        bottom.set_ylabel("mean IU (%)")
        bottom.set_xlabel("iteration")
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80)
        plt.close(fig)
        write_atomically(self.plot_path, png.getvalue())


def _data_wait(net: Any) -> float:
    return float(sum(getattr(layer, "wait_seconds", 0.0) for layer in net.layers))


def _score_ids(net: Any) -> List[str]:
    for layer in net.layers:
        ids = getattr(layer, "ids", None)
        if ids is not None:
            return list(ids)
    raise ValueError(f"test net '{net.name}' has no data layer that lists its samples (an 'ids' attribute); "
                     f"cannot score mean IU")


def train(config: TrainConfig) -> TrainResult:
    """Run the solve loop; see the module docstring."""
    group = distributed.init_from_environment()
    with interrupt.stop_on_signals():
        try:
            solver, records, suspicious = _prepare(config, group)
        except interrupt.Interrupted as stop:  # e.g. a stalled read of the first samples while building the nets
            interrupt.acknowledge()
            log.warning("%s: stopped while setting up, before any training (%s)", _name(stop.signum), stop)
            distributed.shutdown(group)
            return TrainResult(0, True, "", None, None, None, stop_signal=stop.signum, is_main=group.is_main)
        param = solver.param
        iters = config.iters if config.iters is not None else max(param.max_iter - solver.iter, 0)
        score_every = config.score_every or param.test_interval or iters or 1
        scores_at_all = score_every - solver.iter % score_every <= iters
        heads = scored_heads(config, solver) if scores_at_all else []
        # On the solver's own parameters (``param`` is a copy): Caffe-style testing would move the test data
        # layers off the first sample that scoring expects, and only rank 0 writes snapshots.
        solver._param.test_interval = 0  # scoring is this loop's job, on its own schedule
        if not group.is_main:
            solver._param.snapshot = 0
        solver.log_solving()
        stop = _run(solver, group, records, iters, score_every, config, heads)
        interrupt.acknowledge()
        try:
            wanted = not stop.hard if stop is not None else param.snapshot_after_train
            if group.is_main and wanted and not solver.has_snapshot(solver.iter):
                with interrupt.finishing():
                    solver.snapshot()
            if stop is not None:
                glog.info("solver.cpp:311", "Optimization stopped early.")
            else:
                solver.log_done()
            distributed.barrier(group)
            distributed.shutdown(group)
        except interrupt.Interrupted as second:  # a second signal: the snapshot under way is given up
            log.warning("%s; no snapshot at iteration %d", second, solver.iter)
            stop = stop or second
    return TrainResult(solver.iter, stop is not None, records.log_path if records else "",
                       records.plot_path if records and records.scores else None,
                       records.best_path if records and records.best is not None else None,
                       records.best if records else None, records.scores if records else [], suspicious,
                       stop.signum if stop is not None else None, group.is_main)


def _prepare(config: TrainConfig, group: distributed.ProcessGroup) -> Tuple[Solver, Optional[_Records], List[str]]:
    """The solver with its starting weights (files, surgery or a snapshot to resume), and the records."""
    if config.restore and config.weights:
        raise ValueError("give a snapshot to resume training (--restore) or weights to fine-tune (--weights), "
                         "not both")
    glog.set_root_solver(group.is_main)
    solver = get_solver(config.solver_path)
    if solver.param.HasField("solver_mode") and solver.param.solver_mode == caffe_pb2.SolverParameter.GPU \
            and not group.active:
        set_device(solver.param.device_id)  # as the `caffe train` tool honours an explicit solver_mode/device_id
        set_mode_gpu()
    for path in config.weights:
        solver.net.copy_from(path)
    if config.init is not None:
        config.init(solver)
    if config.restore:
        solver.restore(config.restore)
    suspicious = unset_parameters(solver.net)
    if suspicious:
        log.warning("%d layer(s) with weights still at a constant value (no weights file or surgery set them): "
                    "%s; the net may predict a single class", len(suspicious), ", ".join(suspicious))
    param = solver.param
    out_dir = config.out_dir or os.path.dirname(os.path.abspath(param.snapshot_prefix or config.solver_path))
    records = _Records(out_dir) if group.is_main else None
    if group.is_main:
        snapshot_dir = os.path.dirname(os.path.abspath(param.snapshot_prefix)) if param.snapshot_prefix else out_dir
        for folder in sorted({out_dir, snapshot_dir}):
            stale = remove_stale_temps(folder)
            if stale:
                log.warning("removed %d temporary file(s) left in %s by runs that were killed while writing: %s",
                            len(stale), folder, ", ".join(p.name for p in stale))
    return solver, records, suspicious


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def _run(solver: Solver, group: distributed.ProcessGroup, records: Optional[_Records], iters: int,
         score_every: int, config: TrainConfig,
         heads: List[Tuple[str, str, bool]]) -> Optional[interrupt.Interrupted]:
    """Step and score until ``iters`` iterations are done or a stop is requested; returns that request."""
    started = time.perf_counter()
    averager = distributed.gradient_averager(solver, group)
    display = solver.param.display or 20
    bar = _progress(iters, config.progress and group.is_main, config.label)

    def on_start() -> None:
        interrupt.check("stopped between two iterations")

    def on_gradients_ready() -> None:
        loss = solver.smoothed_loss
        bad = averager(0.0 if math.isfinite(loss) else 1.0)
        if bad:
            good = solver.finite_snapshot_before(solver.iter)
            resume = f"the last snapshot with finite weights is {good}" if good else \
                "no snapshot with finite weights was written or restored before it in this run"
            raise NonFiniteLoss(f"iteration {solver.iter}: the loss is {loss} (non-finite) on {int(bad)} "
                                f"process(es); stopped before updating the weights; {resume}")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}")
        if records is not None and solver.iter % display == 0:
            records.loss(solver.iter, loss, solver.lr, time.perf_counter() - started, _data_wait(solver.net))

    solver.add_callback(on_start, on_gradients_ready)
    end = solver.iter + iters
    scoring = False
    try:
        with _logging_above(bar):
            while solver.iter < end:
                chunk = min(score_every - solver.iter % score_every, end - solver.iter)
                solver.step(chunk)
                if solver.iter % score_every == 0 and heads:
                    scoring = True
                    if records is not None:
                        _score(solver, records, config, heads)
                    distributed.barrier(group)
                    scoring = False
    except interrupt.Interrupted as stop:
        interrupt.acknowledge()
        _report_stop(stop, scoring, solver.iter, records)
        return stop
    finally:
        if bar is not None:
            bar.close()
    return None


def _report_stop(stop: interrupt.Interrupted, scoring: bool, iteration: int, records: Optional[_Records]) -> None:
    """Say why and where the run stopped, in the console and in the log."""
    what = f"scoring stopped ({stop}); the partial score is discarded" if scoring else str(stop)
    then = "stopping without a snapshot" if stop.hard else "snapshotting and stopping"
    log.warning("%s at iteration %d: %s; %s", _name(stop.signum), iteration, what, then)
    if records is not None:
        records.write({"iter": iteration, "event": "interrupted"})


def scored_heads(config: TrainConfig, solver: Solver) -> List[Tuple[str, str, bool]]:
    """``(score blob, label blob, present_only)`` of every head the loop scores, the best weights' first;
    checked against the test net before any training, so that a mistyped blob is an error at once."""
    if not solver.test_nets:
        return []
    net = solver.test_nets[0]
    if config.heads is None:
        return score_heads(list(net.blobs))
    heads = list(config.heads)
    for layer, gt, _ in heads:
        missing = [name for name in (layer, gt) if name not in net.blobs]
        if missing:
            raise ValueError(f"cannot score '{layer}' against '{gt}': the test net has no blob "
                             f"{', '.join(repr(m) for m in missing)}")
    return heads


def _score(solver: Solver, records: _Records, config: TrainConfig, heads: List[Tuple[str, str, bool]]) -> None:
    net = solver.test_nets[0]
    save = os.path.join(os.path.dirname(records.log_path), "predictions_iter{}") if config.save_predictions else None
    ids = _score_ids(net)
    (layer, gt, present_only), *also = heads
    scores = seg_tests(solver, save, ids, layer=layer, gt=gt, present_only=present_only)
    heads_scores = [(head, seg_tests(solver, None, ids, layer=head, gt=head_gt, present_only=present))
                    for head, head_gt, present in also]
    log.info("%s", format_scores(scores, solver.iter))
    with interrupt.finishing():  # the records of a complete scoring are worth their write
        records.score(solver.iter, _json_metrics(scores), solver.net)
        for head, head_scores in heads_scores:
            log.info("%s: %s", head, format_scores(head_scores, solver.iter))
            records.write({"iter": solver.iter, "head": head, **_json_metrics(head_scores)})


def _json_metrics(scores: Any) -> Dict[str, Any]:
    """SegScores as a JSON-ready dict: a class absent from the histogram has IU None, not NaN."""
    metrics = scores.as_dict()
    metrics["per_class_iu"] = [None if v != v else v for v in metrics["per_class_iu"]]
    return metrics


def _logging_above(bar: Any) -> Any:
    """While a progress bar is drawn, log lines (scores, warnings, Caffe's glog lines) are printed above it,
    not glued to it."""
    if bar is None:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm
    return logging_redirect_tqdm(loggers=[logging.root, logging.getLogger(glog.LOGGER_NAME)])


def _progress(total: int, enabled: bool, label: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=label, unit="it", dynamic_ncols=True)


def summary(result: TrainResult) -> str:
    """One paragraph for the console."""
    best = f"best mean IU {result.best_mean_iu:.4f} ({result.best_weights})" if result.best_mean_iu is not None \
        else "not scored"
    state = "interrupted" if result.interrupted else "done"
    return f"{state} at iteration {result.iterations}; {best}; log {result.log_path}"


__all__ = ["TrainConfig", "TrainResult", "NonFiniteLoss", "train", "unset_parameters", "summary"]
