"""``caffe``: Caffe's command-line brew (BVLC ``tools/caffe.cpp``) on the runner and the solvers.

    caffe train --solver=solver.prototxt [--weights=a.caffemodel,b.caffemodel | --snapshot=x.solverstate]
    caffe test --model=net.prototxt --weights=w.caffemodel [--iterations=50]
    caffe time --model=net.prototxt [--iterations=50] [--phase=TRAIN]
    caffe device_query --gpu=0

Same actions, gflags flags (any spelling gflags takes, glog's flags too) and log: every line Caffe's tool
logs is a glog line on stderr (the tool sets alsologtostderr) with Caffe's words, numbers and the
``caffe.cpp:NNN`` of BVLC master, and the solver and net log theirs (``netspec.glog``), so shell scripts
and log parsers written for ``caffe`` (tools/extra/parse_log.py) work on its output unchanged.

* ``train``: ``--weights`` is a comma list applied in order ("Finetuning from X" per file), ``--snapshot``
  resumes ("Resuming from X"; only the iteration, the weights and the solver history are restored, the
  data starts over), ``--level``/``--stage`` go into the solver's train_state. ``--sigint_effect`` and
  ``--sighup_effect`` (stop, snapshot, none) are Caffe's: the solver asks after every iteration.
  ``--gpu=0``, ``--gpu=all`` (or ``solver_mode: GPU``) trains on that CUDA device; several devices are
  refused as by a Caffe built without NCCL (data-parallel training: ``fcn train`` under torchrun).
* ``test``: ``--iterations`` forward passes of the TEST phase net, each output element logged per batch,
  then the mean of each with its loss weight: ``loss = 10.4451 (* 1 = 10.4451 loss)``.
* ``time``: per-layer forward and backward milliseconds (phase TRAIN unless ``--phase``), as ``fcn time``
  measures them (``fcn.timing``), in Caffe's lines ("Average Forward pass", "Total Time").
* ``device_query``: the CUDA devices ``--gpu`` names, as PyTorch describes them.

Nets are built as Caffe builds them, Python layers included (Caffe's tool is built WITH_PYTHON_LAYER), and
a solver's ``random_seed`` seeds Caffe's own generator (``runner.caffe_rng``), so a fresh net starts from
the very weights real Caffe gives it.

Exit status: Caffe's where Caffe exits: 0; 1 for a command line gflags refuses; no action or more than one:
gflags' usage on stdout and 0. Where real Caffe aborts (a failed CHECK, LOG(FATAL): unknown action, both
``--snapshot`` and ``--weights``, a GPU in a CPU-only build; exit -6 with a stack trace), this tool prints
Caffe's F line and exits with status 1, no stack trace: Caffe's answer without Caffe's abort. Bad input
below the tool (a missing solver, net, database or weights file, a record that is no Datum, weights of
the wrong shape) is one F line at the ``caffe.cpp`` statement that met it, naming the file or record.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from types import SimpleNamespace
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from fcn.gflags import Flags, define_glog_flags
from netspec import caffe_pb2, glog

PROGRAM = "caffe"
#: CAFFE_VERSION of BVLC master, what ``caffe --version`` prints.
VERSION = "1.0.0"
USAGE = ("command line brew\nusage: caffe <command> <args>\n\ncommands:\n"
         "  train           train or finetune a model\n"
         "  test            score a model\n"
         "  device_query    show GPU diagnostic information\n"
         "  time            benchmark model execution time")
#: Errors from the packages below the tool that are bad input, reported as one F line.
INPUT_ERRORS = (ValueError, OSError, RuntimeError, NotImplementedError)
#: What a CPU-only Caffe says where a GPU is asked for (its NO_GPU: get_gpus' 'all', SetDevice).
NO_GPU_MESSAGE = "Cannot use GPU in CPU-only Caffe: check mode."


class Fatal(Exception):
    """Where Caffe would LOG(FATAL) or fail a CHECK: its ``file:line`` and the message of the F line."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def check_failed(where: str, condition: str, message: str) -> Fatal:
    """glog's CHECK(condition) << message, as the F line reads."""
    return Fatal(where, f"Check failed: {condition} {message}")


def check_gt_zero_failed(where: str, name: str, message: str) -> Fatal:
    """glog's CHECK_GT(FLAGS_x.size(), 0) << message for an empty string flag."""
    return check_failed(where, f"FLAGS_{name}.size() > 0 (0 vs. 0)", message)


@contextlib.contextmanager
def fatal_on_error(where: str) -> Iterator[None]:
    """Report bad input met by the statement at caffe.cpp ``where`` as its F line."""
    try:
        yield
    except INPUT_ERRORS as err:
        raise Fatal(where, str(err)) from None


def flags() -> Flags:
    """Caffe's flags for the tool, with its defaults and help texts (glog's flags accepted, hidden)."""
    f = Flags(USAGE, source="tools/caffe.cpp")
    f.define("gpu", "", "Optional; run in GPU mode on given device IDs separated by ','.Use '-gpu all' to run on "
                        "all available GPUs. The effective training batch size is multiplied by the number of "
                        "devices.")
    f.define("solver", "", "The solver definition protocol buffer text file.")
    f.define("model", "", "The model definition protocol buffer text file.")
    f.define("phase", "", "Optional; network phase (TRAIN or TEST). Only used for 'time'.")
    f.define("level", 0, "Optional; network level.")
    f.define("stage", "", "Optional; network stages (not to be confused with phase), separated by ','.")
    f.define("snapshot", "", "Optional; the snapshot solver state to resume training.")
    f.define("weights", "", "Optional; the pretrained weights to initialize finetuning, separated by ','. Cannot "
                            "be set simultaneously with snapshot.")
    f.define("iterations", 50, "The number of iterations to run.")
    f.define("sigint_effect", "stop", "Optional; action to take when a SIGINT signal is received: snapshot, stop "
                                      "or none.")
    f.define("sighup_effect", "snapshot", "Optional; action to take when a SIGHUP signal is received: snapshot, "
                                          "stop or none.")
    f.define("version", False, "show version and build info and exit", shown=False)
    define_glog_flags(f)
    return f


# ----- devices -----

def requested_gpus(gpu_flag: str) -> List[int]:
    """Caffe's get_gpus: the ids of ``--gpu`` (comma list, or ``all`` for every CUDA device)."""
    if gpu_flag == "all":
        if not torch.cuda.is_available():
            raise Fatal("caffe.cpp:95", f"{NO_GPU_MESSAGE} (--gpu=all: PyTorch sees no CUDA device)")
        return list(range(torch.cuda.device_count()))
    if not gpu_flag:
        return []
    try:
        return [int(text) for text in gpu_flag.split(",")]
    except ValueError:
        raise Fatal("caffe.cpp:104", f"--gpu={gpu_flag}: device ids are integers separated by ',' "
                                     f"(or 'all')") from None


def use_gpu(device_id: int, origin: str, where: str) -> None:
    """Caffe::SetDevice and set_mode(GPU); ``origin`` says who asked (the flag or the solver file)."""
    from runner.device import CPU_FALLBACK_VARIABLE, set_device, set_mode_gpu
    if not torch.cuda.is_available():
        if os.environ.get(CPU_FALLBACK_VARIABLE) != "1":
            raise Fatal("common.cpp:66", f"{NO_GPU_MESSAGE} ({origin}: PyTorch sees no CUDA device; train on the "
                                         f"CPU without it, install a CUDA build of torch, or set "
                                         f"{CPU_FALLBACK_VARIABLE}=1 to run on the CPU anyway)")
    elif not 0 <= device_id < torch.cuda.device_count():
        raise Fatal(where, f"{origin}: no CUDA device {device_id} ({torch.cuda.device_count()} present, ids from 0)")
    with fatal_on_error(where):
        set_device(device_id)
        set_mode_gpu()


def use_cpu() -> None:
    from runner.device import set_mode_cpu
    set_mode_cpu()


def device_name(device_id: int) -> str:
    return torch.cuda.get_device_name(device_id) if torch.cuda.is_available() else "(no CUDA device)"


# ----- signals -----

class SignalActions:
    """Caffe's SignalHandler: SIGINT and SIGHUP only raise a flag; the solver asks ``requested()`` after every
    iteration and gets the effect the flags chose for the signal that came (SIGHUP first)."""

    def __init__(self, sigint_effect: str, sighup_effect: str) -> None:
        self.effects = {signal.SIGINT: requested_action(sigint_effect), signal.SIGHUP: requested_action(sighup_effect)}
        self.received = {signal.SIGINT: False, signal.SIGHUP: False}
        self._previous: Dict[int, object] = {}

    def __enter__(self) -> "SignalActions":
        if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
            for number in self.effects:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        self.received[number] = True

    def requested(self) -> str:
        """The action for a signal received since the last call (Caffe's CheckForSignals)."""
        from solvers.solver import ACTION_NONE
        for number in (signal.SIGHUP, signal.SIGINT):
            if self.received[number]:
                self.received[number] = False
                return self.effects[number]
        return ACTION_NONE


def requested_action(effect: str) -> str:
    """Caffe's GetRequestedAction: the flag's value as a solver action."""
    from solvers.solver import SOLVER_ACTIONS
    if effect not in SOLVER_ACTIONS:
        raise Fatal("caffe.cpp:162", f'Invalid signal effect "{effect}" was specified')
    return effect


# ----- the actions -----

def stages_of(stage_flag: str) -> List[str]:
    """boost::split of ``--stage`` on ',': an empty flag is one empty stage, as Caffe adds it."""
    return stage_flag.split(",")


def train(values: SimpleNamespace) -> int:
    """Train or finetune a model (Caffe's ``train()``)."""
    from solvers.api import get_solver
    from solvers.parameters import read_solver_parameter
    if not values.solver:
        raise check_gt_zero_failed("caffe.cpp:167", "solver", "Need a solver definition to train.")
    if values.snapshot and values.weights:
        raise check_failed("caffe.cpp:168", "!FLAGS_snapshot.size() || !FLAGS_weights.size()",
                           "Give a snapshot to resume training or weights to finetune but not both.")
    stages = stages_of(values.stage)
    with fatal_on_error("caffe.cpp:174"):
        param = read_solver_parameter(values.solver)
    param.train_state.level = values.level
    param.train_state.stage.extend(stages)
    gpu_flag, origin = values.gpu, f"--gpu={values.gpu}"
    if not gpu_flag and param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU:
        gpu_flag = str(param.device_id)  # the solver file may ask for a GPU itself
        origin = f"solver_mode: GPU in {values.solver}"
    gpus = requested_gpus(gpu_flag)
    if not gpus:
        glog.info("caffe.cpp:197", "Use CPU.")
        use_cpu()
    else:
        glog.info("caffe.cpp:204", "Using GPUs %s", ", ".join(str(g) for g in gpus))
        if torch.cuda.is_available():
            for gpu in gpus:
                glog.info("caffe.cpp:209", "GPU %d: %s", gpu, device_name(gpu))
        param.device_id = gpus[0]
        use_gpu(gpus[0], origin, "caffe.cpp:213")
    with SignalActions(values.sigint_effect, values.sighup_effect) as signals:
        if values.snapshot:
            param.ClearField("weights")
        elif values.weights:
            param.ClearField("weights")
            param.weights.append(values.weights)
        with fatal_on_error("caffe.cpp:230"):
            solver = get_solver(values.solver, param)
        solver.set_action_function(signals.requested)
        if values.snapshot:
            glog.info("caffe.cpp:235", "Resuming from %s", values.snapshot)
            with fatal_on_error("caffe.cpp:236"):
                solver.restore(values.snapshot)
        glog.info("caffe.cpp:239", "Starting Optimization")
        if len(gpus) > 1:
            raise Fatal("caffe.cpp:245", "Multi-GPU execution not available - rebuild with USE_NCCL (here: "
                                         "data-parallel training is `torchrun --nproc_per_node=N -m fcn train`)")
        with fatal_on_error("caffe.cpp:248"):
            solver.solve()
    glog.info("caffe.cpp:250", "Optimization Done.")
    return 0


def _device_for_net(gpu_flag: str, lines: Dict[str, str]) -> None:
    """The device choice of ``test`` and ``time``: the first ``--gpu`` id, else the CPU."""
    gpus = requested_gpus(gpu_flag)
    if gpus:
        glog.info(lines["gpu"], "Use GPU with device ID %d", gpus[0])
        if "name" in lines and torch.cuda.is_available():
            glog.info(lines["name"], "GPU device name: %s", device_name(gpus[0]))
        use_gpu(gpus[0], f"--gpu={gpu_flag}", lines["set_device"])
    else:
        glog.info(lines["cpu"], "Use CPU.")
        use_cpu()


def _divide(total: float, count: int) -> float:
    """``total / count`` as C++ divides floating point numbers (a zero count gives inf or nan)."""
    with np.errstate(all="ignore"):
        return float(np.float64(total) / np.float64(count))


def test(values: SimpleNamespace) -> int:
    """Score a model: ``--iterations`` forward passes of its TEST net (Caffe's ``test()``)."""
    from runner.net import Net
    if not values.model:
        raise check_gt_zero_failed("caffe.cpp:258", "model", "Need a model definition to score.")
    if not values.weights:
        raise check_gt_zero_failed("caffe.cpp:259", "weights", "Need model weights to score.")
    stages = stages_of(values.stage)
    _device_for_net(values.gpu, {"gpu": "caffe.cpp:266", "name": "caffe.cpp:270", "set_device": "caffe.cpp:272",
                                 "cpu": "caffe.cpp:275"})
    with fatal_on_error("caffe.cpp:279"):
        net = Net(values.model, caffe_pb2.TEST, level=values.level, stages=stages)
    with fatal_on_error("caffe.cpp:280"):
        net.copy_from(values.weights)
    glog.info("caffe.cpp:281", "Running for %d iterations.", values.iterations)
    outputs = net.outputs
    scores: List[np.float32] = []
    score_outputs: List[str] = []
    loss = np.float32(0)
    last = len(net.graph.slots) - 1
    for i in range(values.iterations):
        with fatal_on_error("caffe.cpp:289"), torch.no_grad():
            loss += np.float32(net._forward(0, last))
        index = 0
        for name in outputs:
            for score in net.blobs[name].data.ravel().astype(np.float32):
                if i == 0:
                    scores.append(score)
                    score_outputs.append(name)
                else:
                    scores[index] += score
                glog.info("caffe.cpp:304", "Batch %d, %s = %g", i, name, glog.real(score))
                index += 1
    with np.errstate(all="ignore"):
        glog.info("caffe.cpp:309", "Loss: %g", glog.real(loss / np.float32(values.iterations)))
        weights = net.blob_loss_weights
        for score, name in zip(scores, score_outputs):
            mean = np.float32(score / np.float32(values.iterations))
            weight = np.float32(weights.get(name, 0.0))
            extra = " (* %g = %g loss)" % (glog.real(weight), glog.real(weight * mean)) if weight else ""
            glog.info("caffe.cpp:321", "%s = %g%s", name, glog.real(mean), extra)
    return 0


def phase_of(phase_flag: str) -> int:
    """Caffe's get_phase_from_flags, TRAIN by default."""
    if not phase_flag:
        return caffe_pb2.TRAIN
    if phase_flag in ("TRAIN", "TEST"):
        return caffe_pb2.Phase.Value(phase_flag)
    raise Fatal("caffe.cpp:119", 'phase must be "TRAIN" or "TEST"')


def time_model(values: SimpleNamespace) -> int:
    """Benchmark a model's forward and backward passes, layer by layer (Caffe's ``time()``)."""
    from fcn.timing import time_pass
    from runner.net import Net
    if not values.model:
        raise check_gt_zero_failed("caffe.cpp:331", "model", "Need a model definition to time.")
    phase = phase_of(values.phase)
    stages = stages_of(values.stage)
    _device_for_net(values.gpu, {"gpu": "caffe.cpp:339", "set_device": "caffe.cpp:340", "cpu": "caffe.cpp:343"})
    with fatal_on_error("caffe.cpp:347"):
        net = Net(values.model, phase, level=values.level, stages=stages)
    last = len(net.graph.slots) - 1
    glog.info("caffe.cpp:351", "Performing Forward")
    with fatal_on_error("caffe.cpp:355"):
        initial_loss = net._forward(0, last)
    glog.info("caffe.cpp:356", "Initial loss: %g", glog.real(initial_loss))
    glog.info("caffe.cpp:357", "Performing Backward")
    with fatal_on_error("caffe.cpp:358"):
        net._backward(last, 0, retain_graph=False, blob_diffs=False)
    glog.info("caffe.cpp:365", "*** Benchmark begins ***")
    glog.info("caffe.cpp:366", "Testing for %d iterations.", values.iterations)
    started = time.perf_counter()
    layers = len(net.graph.slots)
    forward_ms, backward_ms = [0.0] * layers, [0.0] * layers
    forward_total = backward_total = 0.0
    for j in range(values.iterations):
        iteration_started = time.perf_counter()
        with fatal_on_error("caffe.cpp:382"):
            forward, backward = time_pass(net, forward_ms, backward_ms)
        forward_total += forward
        backward_total += backward
        glog.info("caffe.cpp:394", "Iteration: %d forward-backward time: %g ms.", j + 1,
                  glog.real((time.perf_counter() - iteration_started) * 1e3))
    glog.info("caffe.cpp:397", "Average time per layer: ")
    for slot, forward, backward in zip(net.graph.slots, forward_ms, backward_ms):
        glog.info("caffe.cpp:400", "%10s\tforward: %g ms.", slot.name, _divide(forward, values.iterations))
        glog.info("caffe.cpp:403", "%10s\tbackward: %g ms.", slot.name, _divide(backward, values.iterations))
    total_ms = glog.real((time.perf_counter() - started) * 1e3)
    glog.info("caffe.cpp:408", "Average Forward pass: %g ms.", _divide(forward_total, values.iterations))
    glog.info("caffe.cpp:410", "Average Backward pass: %g ms.", _divide(backward_total, values.iterations))
    glog.info("caffe.cpp:412", "Average Forward-Backward: %g ms.", glog.real(_divide(total_ms, values.iterations)))
    glog.info("caffe.cpp:414", "Total Time: %g ms.", total_ms)
    glog.info("caffe.cpp:415", "*** Benchmark ends ***")
    return 0


#: What ``torch.cuda.get_device_properties`` tells of Caffe's DeviceQuery lines: (line, label, attribute).
DEVICE_PROPERTIES = ((179, "Major revision number:         ", "major"),
                     (180, "Minor revision number:         ", "minor"),
                     (181, "Name:                          ", "name"),
                     (182, "Total global memory:           ", "total_memory"),
                     (183, "Total shared memory per block: ", "shared_memory_per_block"),
                     (185, "Warp size:                     ", "warp_size"),
                     (187, "Maximum threads per block:     ", "max_threads_per_block"),
                     (194, "Clock rate:                    ", "clock_rate"),
                     (199, "Number of multiprocessors:     ", "multi_processor_count"))


def device_query(values: SimpleNamespace) -> int:
    """Show what PyTorch knows of each CUDA device ``--gpu`` names (Caffe's ``device_query()``)."""
    glog.info("caffe.cpp:138", "Querying GPUs %s", values.gpu)
    gpus = requested_gpus(values.gpu)
    if not torch.cuda.is_available():
        if gpus:
            raise Fatal("common.cpp:66", f"{NO_GPU_MESSAGE} (--gpu={values.gpu}: PyTorch sees no CUDA device)")
        glog.logger.info("No CUDA device: PyTorch sees none (torch.cuda.is_available() is False)")
        return 0
    for gpu in gpus:
        use_gpu(gpu, f"--gpu={values.gpu}", "caffe.cpp:142")
        properties = torch.cuda.get_device_properties(gpu)
        glog.info("common.cpp:178", "Device id:                     %d", gpu)
        for line, label, attribute in DEVICE_PROPERTIES:
            if hasattr(properties, attribute):
                glog.info(f"common.cpp:{line}", "%s%s", label, getattr(properties, attribute))
    return 0


#: Caffe's brew functions, by name (a std::map: listed in name order).
ACTIONS: Dict[str, Callable[[SimpleNamespace], int]] = {"device_query": device_query, "test": test,
                                                        "time": time_model, "train": train}


def brew_function(name: str) -> Callable[[SimpleNamespace], int]:
    """Caffe's GetBrewFunction: the action, or the list of actions and the F line."""
    if name in ACTIONS:
        return ACTIONS[name]
    glog.error("caffe.cpp:78", "Available caffe actions:")
    for action in sorted(ACTIONS):
        glog.error("caffe.cpp:81", "\t%s", action)
    raise Fatal("caffe.cpp:83", f"Unknown action: {name}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script; ``argv`` defaults to the command line."""
    f = flags()
    values, args = f.parse_or_exit(sys.argv[1:] if argv is None else argv, PROGRAM)
    if values.version:
        sys.stdout.write(f"{PROGRAM} version {VERSION}\n")
        return 0
    if len(args) != 1:
        sys.stdout.write(f.usage(PROGRAM))
        return 0
    with glog.google_logging(minloglevel=values.minloglevel, alsologtostderr=True):
        try:
            return brew_function(args[0])(values)
        except Fatal as fatal:
            glog.log(glog.FATAL, fatal.where, "%s", fatal.message)
            return 1


def command() -> int:
    """The ``caffe`` program: ``main`` in a process that keeps its freed memory for reuse (as ``fcn``)."""
    from runner.host_memory import keep_freed_memory
    keep_freed_memory()
    try:
        return main()
    except KeyboardInterrupt:  # Ctrl-C outside training (where it is --sigint_effect's): stop quietly
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(command())
