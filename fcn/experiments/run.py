"""The experiments' runs: one convolutionalized classifier body, then every ablation trained from it.

Every run is a fcn.demo stage (same synthetic data, nets, solvers and solve loop), so the ablations
differ from the demo's FCN-32s only in what the experiment changes. The plain FCN-32s run (batch 1,
momentum 0.9, whole-image loss, unmasked) is trained once and serves as the reference of every table:
the ladder's FCN-32s, Table 2's FCN-online, loss sampling's p = 1 and the masking grid's reference.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np

from data_layers.catalog import open_layer
from fcn.demo import Budget as DemoBudget
from fcn.demo import nets
from fcn.demo.run import FCN_LR, Demo, StageResult, close_data_layers
from netspec import caffe_pb2
from netspec.prototxt import write_prototxt
from runner.layers.losses import ClassWeights, LossSampling, set_cell_weighting
from runner.net import Net
from solvers.bounds import DEFAULT_FACTORS, iu_bounds
from solvers.heavy import fcn_accum, fcn_heavy, fcn_online
from solvers.score import do_seg_tests
from solvers.solver import Solver

# Summed pixel losses, as the demo: the learning rate of a stage trained from the body, and of the staged
# 16s and 8s nets fine-tuned from their predecessor.
BASE_LR, LR_16S, LR_8S = FCN_LR["fcn32s"], FCN_LR["fcn16s"], FCN_LR["fcn8s"]
SAMPLING = (1.0, 0.5, 0.25)
# Table 8-style grid: (row, train mask, test mask); None keeps the input as it is.
MASKING = (("reference", None, None), ("reference, test FG masked", None, "foreground"),
           ("reference, test BG masked", None, "background"), ("FG only (BG masked)", "background", "background"),
           ("BG only (FG masked)", "foreground", "foreground"), ("shape only", "shape", "shape"))


@dataclass
class Budget:
    """Sizes of the runs of one seed. ``images_seen`` is every whole-image run's length in images
    (FCN-accum takes 1/20 as many updates); ``staged`` the 16s and 8s fine-tunings; ``sampling`` the
    iterations of each loss-sampling run (p < 1 runs see 1/p images per iteration). The defaults take
    about 5 minutes a seed on two idle CPU cores (about 0.035 s per whole-image pass)."""
    images: int = 100
    size: tuple = (96, 128)
    classifier: int = 600
    images_seen: int = 400
    staged: int = 300
    sampling: int = 150
    score_points: int = 1


@dataclass
class Results:
    """What the report needs: the stages by name, extra masked-test scores and the IU bounds."""
    demo: Demo
    budget: Budget
    masked_tests: Dict[str, Dict]
    bounds: Dict[int, float]
    seconds: float = 0.0


def _sampling(keep: float, seed: int) -> Callable[[Solver], None]:
    """A solver init that makes the train net's loss keep each pixel with probability ``keep``."""
    def init(solver: Solver) -> None:
        set_cell_weighting(solver.net, "loss", LossSampling(keep, seed))
    return init


def evaluate(demo: Demo, stage: StageResult, kind: str, test_mask: Optional[str]) -> Dict:
    """Scores of a trained stage on the validation split with ``test_mask`` applied to its input."""
    folder = demo.folder(f"{stage.name}-test-{test_mask}")
    path = os.path.join(folder, "val.prototxt")
    write_prototxt(path, nets.fcn(kind, demo.data_params("val", False, test_mask)))
    net = Net(path, caffe_pb2.TEST, weights=stage.weights)
    ids = next(layer.ids for layer in net.layers if getattr(layer, "ids", None) is not None)
    try:
        return do_seg_tests(net, 0, None, ids).as_dict()
    finally:
        close_data_layers(net)


def split_labels(voc_dir: str, split: str) -> List[np.ndarray]:
    """The label maps of one split of the synthetic VOC, as the data layer decodes them."""
    layer, _ = open_layer("voc", dict(voc_dir=voc_dir, split=split, prefetch=0, randomize=False))
    try:
        return [layer.decode("label", layer.source("label", sample_id))[0] for sample_id in layer.ids]
    finally:
        layer.close()


def val_bounds(voc_dir: str) -> Dict[int, float]:
    """Section 6.3's mean IU upper bounds on the synthetic validation labels, factors 128..4."""
    return iu_bounds(split_labels(voc_dir, "val"), DEFAULT_FACTORS)


def _ladder(demo: Demo, classifier: StageResult, body: str, b: Budget) -> None:
    """Table 3: FCN-32s, then 16s and 8s staged; 32s-fixed; pool5/4/3 on the same classifier's weights."""
    s32 = demo.fcn("fcn32s", b.images_seen, body, BASE_LR)
    s16 = demo.fcn("fcn16s", b.staged, s32.weights, LR_16S)
    demo.fcn("fcn8s", b.staged, s16.weights, LR_8S)
    demo.fcn("fcn32s-fixed", b.images_seen, body, BASE_LR)
    for kind in nets.POOL_ONLY:
        demo.fcn(kind, b.images_seen, demo.fcn_body(classifier, kind), BASE_LR)


def _regimes(demo: Demo, body: str, b: Budget) -> None:
    """Table 2 next to FCN-online (the ladder's FCN-32s). The rates give every recipe the same step per
    image seen, lr / (batch * (1 - momentum)): 20x for the averaged batch of 20, 1/10 for momentum 0.99."""
    accum, heavy, online = fcn_accum(), fcn_heavy(), fcn_online()
    demo.fcn("fcn32s", max(b.images_seen // accum.iter_size, 1), body, BASE_LR * accum.iter_size,
             name="fcn-accum", momentum=accum.momentum, iter_size=accum.iter_size)
    demo.fcn("fcn32s", b.images_seen, body, BASE_LR * (1 - heavy.momentum) / (1 - online.momentum),
             name="fcn-heavy", momentum=heavy.momentum, iter_size=heavy.iter_size)


def _sampling_sweep(demo: Demo, body: str, b: Budget) -> None:
    """p = 1, 0.5, 0.25 at batch 1/p: each update sums about one image's worth of loss cells, so the rate
    is divided by p to undo Caffe's averaging over iter_size."""
    for keep in SAMPLING:
        batch = round(1 / keep)
        demo.fcn("fcn32s", b.sampling, body, BASE_LR / keep, name=f"sampling-p{keep:g}", iter_size=batch,
                 init=_sampling(keep, demo.seed) if keep < 1 else None)


def _balancing(demo: Demo, body: str, b: Budget) -> None:
    """Section 6.1's class balancing next to the unbalanced FCN-32s: the softmax loss weighted by inverse
    class frequency on the training labels, and the null background head (netspec.null_background)."""
    counts = np.zeros(nets.NUM_CLASSES, dtype=np.int64)
    for label in split_labels(demo.voc_dir, "train"):
        counts += np.bincount(label[label < nets.NUM_CLASSES].ravel(), minlength=nets.NUM_CLASSES)
    weights = ClassWeights.inverse_frequency(counts.tolist())

    def weighted(solver: Solver) -> None:
        set_cell_weighting(solver.net, "loss", weights)
    demo.fcn("fcn32s", b.images_seen, body, BASE_LR, name="class-weights", init=weighted)
    demo.fcn("fcn32s-null", b.images_seen, body, BASE_LR, name="null-background")


def _masking(demo: Demo, body: str, b: Budget) -> Dict[str, Dict]:
    """The masked training runs, and the reference (FCN-32s) tested on masked inputs."""
    tested = {}
    for row, train_mask, test_mask in MASKING:
        if train_mask is not None:
            demo.fcn("fcn32s", b.images_seen, body, BASE_LR, name=f"mask-train-{train_mask}",
                     train_mask=train_mask, test_mask=test_mask)
        elif test_mask is not None:
            tested[row] = evaluate(demo, demo.results["fcn32s"], "fcn32s", test_mask)
    return tested


def run_experiments(out_dir: str, budget: Optional[Budget] = None, seed: int = 0) -> Results:
    """Train the shared body once, then every table's runs; writes ``stages.json`` and returns Results."""
    b = budget or Budget()
    started = time.perf_counter()
    demo = Demo(out_dir, DemoBudget(images=b.images, size=b.size, classifier=b.classifier,
                                    score_points=b.score_points), seed)
    classifier = demo.classifier()
    body = demo.fcn_body(classifier)
    _ladder(demo, classifier, body, b)
    _regimes(demo, body, b)
    _sampling_sweep(demo, body, b)
    _balancing(demo, body, b)
    masked = _masking(demo, body, b)
    results = Results(demo, b, masked, val_bounds(demo.voc_dir), time.perf_counter() - started)
    with open(os.path.join(demo.out, "stages.json"), "w") as handle:
        json.dump({"stages": {k: v.__dict__ for k, v in demo.results.items()}, "masked_tests": masked,
                   "bounds": results.bounds, "seconds": results.seconds}, handle, indent=1)
    return results
