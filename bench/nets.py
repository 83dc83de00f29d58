"""The nets the cases time, their random weights, and their multiply-add counts."""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import torch

from bench.sizes import Sizes
from netspec import caffe_pb2
from netspec.backbones import deploy, fcn8s
from netspec.net_spec import L, NetSpec


def fcn8s_deploy(sizes: Sizes, batch: int = 1) -> "caffe_pb2.NetParameter":
    """The released FCN-8s deploy net (VGG16 body) at ``sizes``."""
    return deploy(fcn8s, shape=(batch, 3, sizes.image, sizes.image), num_classes=sizes.classes,
                  widths=sizes.widths, fc_width=sizes.fc_width)


def fcn8s_train(sizes: Sizes, data: Optional[Any] = None) -> "caffe_pb2.NetParameter":
    """FCN-8s with its loss, for training. Its inputs are an Input layer (``data``, ``label``) unless
    ``data`` builds them: ``data(n)`` must set ``n.data`` and ``n.label``. No dropout, so that the runner
    and plain PyTorch compute the same numbers."""
    n = NetSpec()
    if data is None:
        n.data, n.label = L.Input(ntop=2, shape=[dict(dim=[1, 3, sizes.image, sizes.image]),
                                                 dict(dim=[1, 1, sizes.image, sizes.image])])
    else:
        data(n)
    fcn8s(n, n.data, n.label, num_classes=sizes.classes, widths=sizes.widths, fc_width=sizes.fc_width,
          dropout=False)
    return n.to_proto()


def randomize(net: Any, seed: int = 0) -> None:
    """He-normal weights and small random biases in every parameter blob of a runner ``Net``, so that
    activations keep their scale through the 16 layers (all-zero weights would time differently)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blobs in net.params.values():
            weight = blobs[0].tensor()
            fan_in = math.prod(weight.shape[1:]) or 1
            weight.copy_(torch.randn(weight.shape, generator=generator) * math.sqrt(2.0 / fan_in))
            for bias in blobs[1:]:
                bias.tensor().copy_(torch.randn(bias.shape, generator=generator) * 0.01)


def multiply_adds(net: Any) -> int:
    """Multiply-adds of a runner ``Net``'s Convolution, Deconvolution and InnerProduct layers at its
    current blob shapes (everything else is a rounding error next to them)."""
    total = 0
    for slot in net.graph.slots:
        if slot.type not in ("Convolution", "Deconvolution", "InnerProduct"):
            continue
        weight = tuple(slot.param_blobs[0].shape)
        if slot.type == "Deconvolution":  # every input value is scattered through a Cout/g x k x k kernel
            total += math.prod(net.blobs[slot.bottoms[0]].shape) * math.prod(weight[1:])
        else:  # every output value gathers one filter (one weight row for InnerProduct)
            total += math.prod(net.blobs[slot.tops[0]].shape) * math.prod(weight[1:])
    return total


def random_image(shape: Tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A standard-normal input: with He-normal weights the scores stay a few units large, where softmax
    does not underflow (Caffe's loss clips probabilities at FLT_MIN, torch's cross-entropy does not)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator)
