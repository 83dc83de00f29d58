"""The model-zoo deploy nets the zoo case times (bench/zoo/, sources in bench/zoo/SOURCES.tsv), at batch 1
with random weights whose activations keep their scale through every layer.

Random He-normal filters alone would let a 100-layer net's activations drift by orders of magnitude, and
random BatchNorm statistics would not normalise anything; so each BatchNorm's stored statistics are set to
the mean and variance its bottom actually has on the timing image (measured just before the layer runs,
through pycaffe's ``before_forward`` hook), as a trained net's running averages would be.
"""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np
import torch

from bench.nets import randomize
from bench.sizes import ZOO_NETS
from netspec import caffe_pb2
from runner.net import Net

ZOO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo")


def prototxt(name: str) -> str:
    """The path of zoo net ``name``'s deploy prototxt."""
    if name not in ZOO_NETS:
        raise ValueError(f"unknown zoo net {name!r}; known: {', '.join(ZOO_NETS)}")
    return os.path.join(ZOO, f"{name}.prototxt")


def zoo_net(name: str, seed: int = 0) -> "tuple[Net, np.ndarray]":
    """Zoo net ``name`` at batch 1 with calibrated random weights, and the standard-normal image it was
    calibrated on (already in its input blob)."""
    net = Net(prototxt(name), caffe_pb2.TEST)
    (data,) = net.inputs
    shape = (1,) + net.blobs[data].shape[1:]
    net.blobs[data].reshape(*shape)
    net.reshape()
    randomize(net, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    image = torch.randn(shape, generator=generator).numpy()
    _random_affine(net, generator)
    _calibrate_batch_norms(net, image)
    net.blobs[data].data[...] = image
    return net, image


def _random_affine(net: Net, generator: torch.Generator) -> None:
    """Scale layers: factors around 0.5 and small offsets. Factors near 1 on He-normal filters make a deep
    random net chaotic (each block amplifies a rounding difference, to 7e-4 of the output through ResNet-50),
    which trained nets are not."""
    for slot in net.graph.slots:
        if slot.type == "Scale" and slot.param_blobs:
            blobs = slot.param_blobs
            blobs[0].data[...] = (0.4 + 0.2 * torch.rand(blobs[0].shape, generator=generator)).numpy()
            for bias in blobs[1:]:
                bias.data[...] = (0.1 * torch.randn(bias.shape, generator=generator)).numpy()


def _calibrate_batch_norms(net: Net, image: np.ndarray) -> None:
    """One forward in which every BatchNorm's statistics are set, just before it runs, to its bottom's
    per-channel mean and variance (factor 1)."""
    slots = net.graph.slots
    batch_norms: Dict[int, List] = {i: s.param_blobs for i, s in enumerate(slots) if s.type == "BatchNorm"}

    def set_statistics(index: int) -> None:
        if index in batch_norms:
            bottom = net.blobs[slots[index].bottoms[0]].tensor()
            dims = [d for d in range(bottom.dim()) if d != 1]
            mean_sum, var_sum, factor = batch_norms[index]
            mean_sum.data[...] = bottom.mean(dim=dims).numpy()
            variance = bottom.var(dim=dims, unbiased=False)
            # a near-constant channel (dead after a ReLU) would be blown up by 1/sqrt(var), rounding and all
            var_sum.data[...] = variance.clamp_min(0.1 * float(variance.mean()) + 1e-3).numpy()
            factor.data[...] = 1.0

    hooks = net._before_forward
    hooks.append(set_statistics)
    try:
        net.forward(**{net.inputs[0]: image})
    finally:
        hooks.remove(set_statistics)

