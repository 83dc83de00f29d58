"""What every ``models/<experiment>/solve.py`` shares: where its initial weights come from, how surgery
starts its net from them, and the command line around ``solvers.training.train``.

The release's solve.py files were copies of one another that differed in a weights path, a surgery
step and a scoring call. Here each solve.py only declares its ``Recipe`` (those differences as data)
and calls ``main``; the recipe steps are plain functions so tests can run them on tiny nets.

Imports of torch and the runner happen inside functions: ``solve.py --help`` stays instant.

The console is ``fcn train``'s: a progress bar, scores, one-line errors; with ``GLOG_logtostderr=1``,
Caffe's glog log (net construction, the solver's display lines) instead of the bar.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from netspec import caffe_pb2
    from runner.net import Net
    from solvers.training import TrainResult

__all__ = ["CONTEXT", "DATA_ROOT", "ILSVRC_NETS", "NYUD", "Recipe", "SIFTFLOW", "Scoring", "SetupError",
           "StoredNet", "VOC", "Weights", "color_depth", "copy_weights", "imagenet", "imagenet_body",
           "late_fusion", "main", "stage", "upsampling_layers"]

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
DATA_ROOT = REPO / "data"
ILSVRC_NETS = MODELS / "ilsvrc-nets"
RUN_FOLDER = "train"  # <experiment>/train, where `fcn train` writes too, so stages find each other
RELEASE_URL = "http://dl.caffe.berkeleyvision.org"


class SetupError(Exception):
    """Something a run needs is missing; the message is one line saying where we looked and what to do."""


@dataclass(frozen=True)
class Weights:
    """One initial-weights file a recipe needs: its name on the command line, what it is, the paths
    tried when none is given (first existing wins; computed when asked, as training adds files), and
    how to get it."""

    metavar: str
    what: str
    defaults: Callable[[], list[Path]]
    how_to_get: str

    def locate(self, given: Optional[str]) -> Path:
        """``given`` if it is a file, else the first existing default; SetupError naming the paths tried."""
        tried = [Path(given)] if given else self.defaults()
        for path in tried:
            if path.is_file():
                return path.resolve()
        looked = ", ".join(str(p) for p in tried) or "nowhere (no default)"
        raise SetupError(f"no {self.what}: looked at {looked}. {self.how_to_get}")


# ImageNet classifier -> (its caffemodel URL, its deploy prototxt URL); convolutionalized into a body.
_CLASSIFIERS = {
    "vgg16": ("http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel",
              "https://gist.github.com/ksimonyan/211839e770f7b538e2d8 (VGG_ILSVRC_16_layers_deploy.prototxt)"),
    "alexnet": (f"{RELEASE_URL}/bvlc_reference_caffenet.caffemodel",
                "BVLC Caffe's models/bvlc_reference_caffenet/deploy.prototxt"),
    "googlenet": (f"{RELEASE_URL}/bvlc_googlenet.caffemodel", "BVLC Caffe's models/bvlc_googlenet/deploy.prototxt"),
}


def imagenet(backbone: str) -> Weights:
    """The ImageNet classifier ``backbone`` (vgg16, alexnet, googlenet) as an FCN body:
    models/ilsvrc-nets/<backbone>-fcn.caffemodel, as the release's solve.py files expect it."""
    caffemodel, prototxt = _CLASSIFIERS[backbone]
    target = ILSVRC_NETS / f"{backbone}-fcn.caffemodel"
    how = (f"Download the ILSVRC classifier {caffemodel} and its prototxt from {prototxt}, then convert it "
           f"(fully connected layers into convolutions) with, from {REPO}: python -c \"import surgery, "
           f"models.solve_common as s; surgery.convolutionalize('<prototxt>', '<caffemodel>', "
           f"s.imagenet_body('{backbone}'), '{target}')\"; or pass --weights.")
    return Weights(f"{backbone.upper()}_FCN", f"{backbone} FCN body", lambda: [target], how)


def imagenet_body(backbone: str) -> "caffe_pb2.NetParameter":
    """The layers a <backbone>-fcn.caffemodel holds: the classifier's body up to fc7 (inception_5b for
    GoogLeNet) as convolutions, named as every FCN of that backbone names them, and no score layer,
    so the file starts nets with any number of classes (``convolutionalize``'s ``fcn_body``)."""
    from netspec.alexnet import alexnet
    from netspec.backbones import input_layer, vgg16
    from netspec.googlenet import googlenet
    from netspec.net_spec import NetSpec
    bodies = {"vgg16": vgg16, "alexnet": alexnet, "googlenet": googlenet}
    n = NetSpec()
    data, = input_layer(n, {"data": (1, 3, 227, 227)})  # any size serves: only the weights are kept
    bodies[backbone](n, data, dropout=False)
    return n.to_proto()


def _run_weights(experiment: str) -> list[Path]:
    """A finished run's weights, best first: best.caffemodel (highest mean IU), then the latest snapshot."""
    run = MODELS / experiment / RUN_FOLDER
    number = re.compile(r"_iter_(\d+)\.caffemodel$")
    snapshots = [p for p in (run / "snapshot").glob("*_iter_*.caffemodel") if number.search(p.name)]
    snapshots.sort(key=lambda p: int(number.search(p.name).group(1)), reverse=True)
    return [run / "best.caffemodel", *snapshots[:1]]


def stage(experiment: str, release: str, metavar: str = "WEIGHTS") -> Weights:
    """The weights of an earlier experiment (an earlier stage, or a single-modality net): its run's best
    or last weights under models/<experiment>/train; the error names the release's ``release`` file."""
    how = (f"Train it first (python models/{experiment}/solve.py), or download the released "
           f"{RELEASE_URL}/{release}.caffemodel and pass it with --weights.")
    return Weights(metavar, f"{experiment} weights", lambda: _run_weights(experiment), how)


class StoredNet:
    """A caffemodel's parameters laid out as a Net's ``params`` (layer -> blobs with ``data``), so that
    ``surgery.transplant`` reads a weights file without building the net (and its data layers) it came from."""

    def __init__(self, path: Path) -> None:
        from netspec.caffemodel import load_caffemodel
        _, arrays = load_caffemodel(path)
        self.params = {name: [SimpleNamespace(data=a, shape=a.shape) for a in blobs]
                       for name, blobs in arrays.items()}


# ----- init steps: (train net, located weights files) -> None, the recipe's surgery before interp -----

Init = Callable[["Net", Sequence[Path]], None]


def copy_weights(net: "Net", paths: Sequence[Path]) -> None:
    """Caffe's copy_from: same-named layers take the file's weights (shapes must match), others keep
    their fillers. How every single-input net starts, from ImageNet or from its previous stage."""
    net.copy_from(str(paths[0]))


BGR_CONV = "conv1_1"  # the ImageNet body's first convolution, three input channels (B, G, R)


def color_depth(first_conv: str) -> Init:
    """Early fusion (nyud-fcn32s-color-d): the body's layers by name, then ``first_conv`` (the renamed
    conv1_1 taking BGR + D) gets conv1_1's BGR filters and, for the depth channel, their mean over the
    three colour channels, so depth starts as a grey image would."""
    def init(net: "Net", paths: Sequence[Path]) -> None:
        from surgery import transplant
        body = StoredNet(paths[0])
        transplant(net, body)
        weight, bias = body.params[BGR_CONV]
        new_weight, new_bias = net.params[first_conv]
        new_weight.data[:, :3] = weight.data
        new_weight.data[:, 3] = weight.data.mean(axis=1)
        new_bias.data[...] = bias.data
    return init


def late_fusion(*suffixes: str) -> Init:
    """Late fusion (nyud-fcn32s-color-hha): stream ``suffixes[i]`` (layers conv1_1<suffix> …
    score_fr<suffix>) takes weights file i, a single-modality net with the plain names."""
    def init(net: "Net", paths: Sequence[Path]) -> None:
        from surgery import transplant
        for suffix, path in zip(suffixes, paths):
            transplant(net, StoredNet(path), suffix=suffix)
    return init


def upsampling_layers(net: "Net") -> list[str]:
    """The Deconvolution layers: FCN fixes them all to bilinear interpolation (the release picked them
    by 'up' in the name; the type says it without relying on names)."""
    return [name for name, layer in net.layer_dict.items() if layer.type == "Deconvolution"]


@dataclass(frozen=True)
class Scoring:
    """What the periodic scoring reads: the release's ``solver.step(every)`` between two scorings, and the
    heads scored, each ``(score blob, label blob, present_only)`` (``TrainConfig.heads``: the first picks
    the best weights; present_only averages over the classes present in the ground truth, as for SIFT
    Flow's semantic labels, many of whose 33 classes the test set lacks)."""

    every: int
    heads: Tuple[Tuple[str, str, bool], ...] = (("score", "label", False),)


VOC = Scoring(4000)
CONTEXT = Scoring(8000)
NYUD = Scoring(2000)
# The release scored both heads, the semantic one (whose IU the paper reports, and which picks the best
# weights) and the geometric one.
SIFTFLOW = Scoring(2000, (("score_sem", "sem", True), ("score_geo", "geo", False)))


@dataclass(frozen=True)
class Recipe:
    """How one experiment trains: its initial weights, the surgery on them, and its scoring."""

    weights: tuple[Weights, ...]
    scoring: Scoring
    init: Init = copy_weights

    def initialize(self, net: "Net", paths: Sequence[Path]) -> None:
        """The surgery: the init step, then bilinear kernels in every upsampling layer."""
        from surgery import interp
        self.init(net, paths)
        interp(net, upsampling_layers(net))

    def train(self, solver_path: Path, weights: Sequence[Path], data: Path, out: Path,
              iters: Optional[int] = None, score_every: Optional[int] = None,
              restore: Optional[str] = None, progress: bool = True) -> "TrainResult":
        """Train ``solver_path``'s nets reading ``data`` into ``out`` (a resolved copy of the solver, its
        logs, plots, best weights and snapshots). ``weights`` are located files, unused with ``restore``."""
        from solvers.relocate import relocate_solver
        from solvers.training import TrainConfig, train
        solver = relocate_solver(str(solver_path), str(out), str(data))
        init = None if restore else (lambda s: self.initialize(s.net, weights))
        return train(TrainConfig(solver, init=init, restore=restore, iters=iters,
                                 score_every=score_every or self.scoring.every, out_dir=str(out),
                                 heads=self.scoring.heads, progress=progress))


def _parser(folder: Path, recipe: Recipe) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{folder.name}/solve.py",
        description=f"Train {folder.name} as the FCN release did: start from "
                    f"{' and '.join(w.what for w in recipe.weights)}, fix the upsampling layers to "
                    f"bilinear, score mean IU on the test net every --score-every iterations.")
    defaults = "; ".join(f"{w.metavar}: first of {', '.join(str(p) for p in w.defaults())}"
                         for w in recipe.weights)
    parser.add_argument("--weights", nargs=len(recipe.weights), metavar=tuple(w.metavar for w in recipe.weights),
                        help=f"initial weights (default: {defaults})")
    parser.add_argument("--data", type=Path, default=DATA_ROOT,
                        help="data root in the release's layout, e.g. <data>/pascal/VOC2011 (default: %(default)s)")
    parser.add_argument("--iters", type=int, help="iterations to run (default: the solver's max_iter)")
    parser.add_argument("--score-every", type=int, default=recipe.scoring.every,
                        help="score mean IU every N iterations (default: %(default)s, the release's)")
    parser.add_argument("--out", type=Path, default=folder / RUN_FOLDER,
                        help="output folder: solver copy, log, curves, best.caffemodel, snapshot/ "
                             "(default: %(default)s)")
    parser.add_argument("--restore", "--snapshot", dest="restore", metavar="SOLVERSTATE",
                        help="resume from a snapshot instead of --weights (--snapshot is Caffe's name)")
    parser.add_argument("--gpu", type=int, metavar="DEVICE", help="CUDA device to train on (default: CPU)")
    return parser


def main(folder: Path, recipe: Recipe, argv: Optional[Sequence[str]] = None) -> int:
    """solve.py's entry point: ``solve`` in a process that keeps its freed memory for reuse (see
    ``runner.host_memory``: it spares each iteration page-faulting its activations in again), and that
    leaves at once after a run a signal stopped (``runner.interrupt.exit_for_signal``)."""
    from runner.host_memory import keep_freed_memory
    from runner.interrupt import exit_for_signal
    keep_freed_memory()
    return exit_for_signal(solve(folder, recipe, argv))


def solve(folder: Path, recipe: Recipe, argv: Optional[Sequence[str]] = None) -> int:
    """The solve.py command line for experiment ``folder``; returns the exit status (2: missing input)."""
    args = _parser(folder, recipe).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from netspec import glog
    with glog.google_logging():
        return _solve(folder, recipe, args)


def _solve(folder: Path, recipe: Recipe, args: argparse.Namespace) -> int:
    from solvers.training import NonFiniteLoss, summary
    try:
        weights = [] if args.restore else [w.locate(given) for w, given in
                                           zip(recipe.weights, args.weights or [None] * len(recipe.weights))]
        if args.gpu is not None:
            from runner.device import set_device, set_mode_gpu
            set_device(args.gpu)
            set_mode_gpu()
        from netspec import glog
        result = recipe.train(folder / "solver.prototxt", weights, args.data.resolve(), args.out.resolve(),
                              args.iters, args.score_every, args.restore, progress=not glog.info_on_stderr())
    except (SetupError, OSError, ValueError) as err:  # as `fcn train`: missing data, bad weights, full disk
        print(f"{folder.name}/solve.py: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLoss as err:  # the run diverged
        print(f"{folder.name}/solve.py: error: {err}", file=sys.stderr)
        return 1
    if result.is_main:
        print(summary(result))
    return result.exit_status
