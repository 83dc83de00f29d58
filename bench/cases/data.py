"""Case 5: how fast the data layers deliver, and how much of a real solve loop is spent waiting for them.

Delivery: data_layers.bench on synthetic datasets in each release format, with no net in between (the
raw images/s a layer can hand out), inline and prefetched. Waiting: a short ``solvers.training.train`` run
of a narrow FCN-8s reading synthetic VOC through VOCSegDataLayer, whose train_log.jsonl records the
cumulative seconds and data-wait seconds; the fraction is taken once inline and once prefetched.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from typing import Any, Dict

from bench.sizes import Sizes
from bench.nets import fcn8s_train, randomize
from data_layers.bench import bench
from data_layers.layout import KINDS
from data_layers.synthetic import write_dataset
from netspec.net_spec import L
from netspec.prototxt import write_prototxt
from solvers.training import TrainConfig, train

PREFETCH = 4


def _wait_fraction(sizes: Sizes, voc_dir: str, prefetch: int, folder: str) -> Dict[str, Any]:
    """Train ``sizes.wait_iters`` iterations reading VOC with this prefetch depth; the last log record's
    data-wait seconds over its seconds."""
    os.makedirs(folder)
    params = dict(voc_dir=voc_dir, split="train", seed=1, prefetch=prefetch)

    def data(n: Any) -> None:
        n.data, n.label = L.Python(module="data_layers.voc", layer="VOCSegDataLayer", ntop=2,
                                   param_str=repr(params))

    narrow = replace(sizes, widths=sizes.wait_widths, fc_width=sizes.wait_fc_width)
    net_path, solver_path = os.path.join(folder, "train.prototxt"), os.path.join(folder, "solver.prototxt")
    write_prototxt(net_path, fcn8s_train(narrow, data))
    with open(solver_path, "w") as handle:
        handle.write(f'train_net: "{net_path}"\nbase_lr: 1e-10\nlr_policy: "fixed"\nmomentum: 0.99\n'
                     f"weight_decay: 0.0005\ndisplay: 1\naverage_loss: 1\nmax_iter: {sizes.wait_iters}\n")
    result = train(TrainConfig(solver_path, iters=sizes.wait_iters, out_dir=folder, progress=False,
                               init=lambda solver: randomize(solver.net)))
    with open(result.log_path) as handle:
        last = [json.loads(line) for line in handle][-1]
    return {"prefetch": prefetch, "iterations": result.iterations, "seconds": last["seconds"],
            "data_wait_seconds": last["data_wait_seconds"],
            "wait_fraction": last["data_wait_seconds"] / last["seconds"] if last["seconds"] else 0.0}


def run(sizes: Sizes, scratch: str) -> Dict[str, Any]:
    delivery = bench(KINDS, images=sizes.data_images, size=sizes.data_size, net_seconds=0.0, prefetch=PREFETCH)
    keys = write_dataset("voc", os.path.join(scratch, "data"), n=max(sizes.wait_iters, 2), size=sizes.data_size)
    waits = [_wait_fraction(sizes, keys["voc_dir"], depth, os.path.join(scratch, f"wait-{depth}"))
             for depth in (0, PREFETCH)]
    return {
        "image_size": list(sizes.data_size),
        "delivery": [dict(asdict(r), images_per_second=r.images_per_second) for r in delivery],
        "training_wait": {"net": {"widths": list(sizes.wait_widths), "fc_width": sizes.wait_fc_width},
                          "runs": waits},
    }
