"""The demo's stages: data, classifier, convolutionalization, FCN-32s → 16s → 8s and 8s at once.

Each stage uses the project's real parts (synthetic VOC files read by the real VOC data layer, NetSpec,
the Caffe solvers and solve loop, net surgery), so the demo is an end-to-end check as much as a show.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from data_layers.synthetic import write_dataset
from fcn.demo import nets
from netspec.prototxt import write_prototxt
from solvers.training import TrainConfig, train
from surgery import convolutionalize, interp


@dataclass
class Budget:
    """Pictures and iterations per stage; the defaults take about three minutes on two idle CPU cores.
    200 pictures per split: with 40, every net memorised the training split."""
    images: int = 200
    size: tuple = (96, 128)
    classifier: int = 600
    fcn32s: int = 1000
    fcn16s: int = 1000
    fcn8s: int = 1200
    atonce: int = 1200
    score_points: int = 2


# The classifier (its own pretraining, from scratch) uses Caffe's Adam: with plain SGD this body without
# normalisation layers reached 28% accuracy in 600 iterations where Adam reached 87%. The FCN stages use
# Caffe's SGD, as the paper, on summed pixel losses; staged nets fine-tune at lower rates. Caffe's
# clip_gradients caps each update: without it SGD diverged at any rate that learned in this budget.
CLASSIFIER_LR = 0.001
CLASSIFIER_BATCH = 8
CLASSIFIER_PICTURES_PER_CLASS = 48
FCN_LR = {"fcn32s": 3e-6, "fcn16s": 2e-6, "fcn8s": 1e-6, "fcn8s-atonce": 3e-6}
CLIP_GRADIENTS = 20000.0
FCN_MOMENTUM = 0.9


@dataclass
class StageResult:
    name: str
    seconds: float
    weights: str
    log: str
    final: Dict = field(default_factory=dict)


def close_data_layers(net) -> None:
    """Stop the prefetch threads of a net's data layers once it is no longer run."""
    for layer in net.layers:
        close = getattr(layer, "close", None)
        if close is not None:
            close()


def _upsampling_layers(net) -> List[str]:
    return [name for name in net.params if name.startswith("upscore")]


def _interp_all(solver) -> None:
    interp(solver.net, _upsampling_layers(solver.net))


class Demo:
    """Runs the stages into ``out_dir`` and remembers what each produced."""

    def __init__(self, out_dir: str, budget: Budget, seed: int = 0,
                 progress: Optional["StageProgress"] = None) -> None:
        self.out = os.path.abspath(out_dir)
        self.budget = budget
        self.seed = seed
        self.progress = progress
        self.results: Dict[str, StageResult] = {}
        os.makedirs(self.out, exist_ok=True)
        self.voc_dir = write_dataset("voc", os.path.join(self.out, "data"), n=budget.images, size=budget.size,
                                     seed=seed)["voc_dir"]

    def folder(self, name: str) -> str:
        folder = os.path.join(self.out, name)
        os.makedirs(folder, exist_ok=True)
        return folder

    def _solver(self, folder: str, train_net, val_net, base_lr: float, momentum: float, iters: int,
                note: str, iter_size: int = 1, solver_type: str = "SGD", clip: float = CLIP_GRADIENTS) -> str:
        train_path, val_path = os.path.join(folder, "train.prototxt"), os.path.join(folder, "val.prototxt")
        write_prototxt(train_path, train_net)
        write_prototxt(val_path, val_net)
        path = os.path.join(folder, "solver.prototxt")
        with open(path, "w") as handle:
            handle.write(nets.solver_text(train_path, val_path, base_lr, momentum,
                                          os.path.join(folder, "snapshot"), iters, note, iter_size,
                                          solver_type, clip))
        return path

    def _run(self, name: str, solver: str, iters: int, weights: List[str], init=None,
             score: bool = True) -> StageResult:
        started = time.perf_counter()
        every = max(iters // self.budget.score_points, 1) if score else iters + 1
        label = self.progress.start(name, iters) if self.progress is not None else name
        result = train(TrainConfig(solver, weights=weights, init=init, iters=iters, score_every=every,
                                   out_dir=os.path.dirname(solver), label=label))
        if self.progress is not None:
            self.progress.done(name)
        final = os.path.join(os.path.dirname(solver), f"snapshot_iter_{result.iterations}.caffemodel")
        stage = StageResult(name, time.perf_counter() - started, final, result.log_path,
                            result.scores[-1] if result.scores else {})
        self.results[name] = stage
        return stage

    def data_params(self, split: str, randomize: bool, mask: Optional[str] = None) -> str:
        params = dict(voc_dir=self.voc_dir, split=split, seed=self.seed, randomize=randomize)
        return repr(dict(params, mask=mask) if mask else params)

    def classifier(self) -> StageResult:
        folder = self.folder("classifier")
        patches = repr(dict(batch=CLASSIFIER_BATCH, patch=nets.PATCH, per_class=CLASSIFIER_PICTURES_PER_CLASS,
                            classes=nets.NUM_CLASSES, seed=self.seed + 1000))
        net = nets.classifier(patches)
        solver = self._solver(folder, net, net, CLASSIFIER_LR, 0.9, self.budget.classifier,
                              f"classifier: mean loss over a batch of {CLASSIFIER_BATCH} pictures", solver_type="Adam",
                              clip=0.0)
        return self._run("classifier", solver, self.budget.classifier, [], score=False)

    def fcn_body(self, classifier: StageResult, kind: str = "fcn32s") -> str:
        """The classifier convolutionalized into the FCN body (fc6/fc7 reshaped, fc8 dropped); another
        ``kind`` (a truncated pool-N body, whose score layer is narrower) gets a file of its own."""
        folder = self.folder("fcn-body")
        body = nets.fcn(kind, self.data_params("train", True))
        path = os.path.join(folder, "body.caffemodel" if kind == "fcn32s" else f"body-{kind}.caffemodel")
        convolutionalize(os.path.join(self.out, "classifier", "train.prototxt"), classifier.weights, body, path)
        return path

    def fcn(self, kind: str, iters: int, weights: str, base_lr: float, *, name: Optional[str] = None,
            momentum: float = FCN_MOMENTUM, iter_size: int = 1, train_mask: Optional[str] = None,
            test_mask: Optional[str] = None, init: Optional[Callable] = None) -> StageResult:
        """Train one FCN of ``kind`` into folder ``name`` (default ``kind``). The keywords serve the paper's
        ablations (fcn.experiments): solver momentum and batch (``iter_size``), input masking of either
        phase, and an ``init`` run on the solver after the bilinear upsampling is filled in."""
        name = name or kind
        folder = self.folder(name)
        train_net = nets.fcn(kind, self.data_params("train", True, train_mask))
        val_net = nets.fcn(kind, self.data_params("val", False, test_mask))
        solver = self._solver(folder, train_net, val_net, base_lr, momentum, iters,
                              "summed loss over pixels (normalize: false), as the paper", iter_size)
        if kind != "fcn32s-null":
            write_prototxt(os.path.join(folder, "deploy.prototxt"), nets.deploy(kind, self.budget.size))

        def setup(solver_) -> None:
            _interp_all(solver_)
            if init is not None:
                init(solver_)
        return self._run(name, solver, iters, [weights], init=setup)


STAGES = ("classifier", "fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")


class StageProgress:
    """One line per stage, "[k/N] name: I iterations; elapsed m:ss, about m:ss left", with the time left
    extrapolated from the iterations done so far (every iteration of every stage costs about the same:
    a classifier batch of 8 pictures of 128x128 and an FCN pass over one 96x128 picture padded by 49)."""

    def __init__(self, iterations: Dict[str, int]) -> None:
        self.iterations = iterations
        self.names = list(iterations)
        self.started = time.perf_counter()
        self.finished = 0

    def start(self, name: str, iters: int) -> str:
        position = f"[{self.names.index(name) + 1}/{len(self.names)}]"
        elapsed = time.perf_counter() - self.started
        total = sum(self.iterations.values())
        left = (f"about {_clock(elapsed * (total - self.finished) / self.finished)} left" if self.finished
                else "estimating the time left after this stage")
        print(f"{position} {name}: {iters} iterations; elapsed {_clock(elapsed)}, {left}", flush=True)
        return f"{position} {name}"

    def done(self, name: str) -> None:
        self.finished += self.iterations[name]


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}:{rest:02d}"


def run_stages(out_dir: str, budget: Optional[Budget] = None, seed: int = 0) -> Demo:
    """Every stage in order; returns the Demo with its results (see fcn.demo.report for the outputs)."""
    b = budget or Budget()
    progress = StageProgress(dict(zip(STAGES, (b.classifier, b.fcn32s, b.fcn16s, b.fcn8s, b.atonce))))
    demo = Demo(out_dir, b, seed, progress)
    cls = demo.classifier()
    body = demo.fcn_body(cls)
    s32 = demo.fcn("fcn32s", b.fcn32s, body, FCN_LR["fcn32s"])
    s16 = demo.fcn("fcn16s", b.fcn16s, s32.weights, FCN_LR["fcn16s"])
    demo.fcn("fcn8s", b.fcn8s, s16.weights, FCN_LR["fcn8s"])
    demo.fcn("fcn8s-atonce", b.atonce, body, FCN_LR["fcn8s-atonce"])
    with open(os.path.join(demo.out, "stages.json"), "w") as handle:
        json.dump({k: v.__dict__ for k, v in demo.results.items()}, handle, indent=1)
    return demo
