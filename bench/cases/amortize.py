"""Case 3: the paper's Section 3.1 amortization. AlexNet made fully convolutional (fc6-fc8 as 6x6 and 1x1
convolutions, conv1 unpadded as in the classifier) turns a 500x500 image into a 10x10 grid of 1000-class
scores in one forward; the classifier needs one 227x227 forward per grid cell. The paper reports the
convolutional net more than 5x faster than the classifier on the same outputs (22 ms vs 100 x 1.2 ms).
"""
from __future__ import annotations

from typing import Any, Dict

import torch

from bench.measure import interleaved
from bench.nets import multiply_adds, random_image, randomize
from bench.sizes import Sizes
from netspec import caffe_pb2
from netspec.alexnet import alexnet
from netspec.net_spec import L, NetSpec
from runner.net import Net

CLASSES = 1000
STRIDE = 32  # AlexNet's output stride: grid cell (i, j) looks at the patch starting at (32 i, 32 j)
FULLY_CONNECTED = ("fc6", "fc7", "fc8")


def convolutional_alexnet(side: int, batch: int = 1) -> "caffe_pb2.NetParameter":
    """AlexNet with fc6-fc8 as convolutions on ``batch`` x 3 x ``side`` x ``side`` inputs."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, side, side]))
    n.fc8 = L.Convolution(alexnet(n, n.data, dropout=False), num_output=CLASSES, kernel_size=1)
    net = n.to_proto()
    conv1 = next(layer for layer in net.layer if layer.name == "conv1")
    conv1.convolution_param.ClearField("pad")  # FCN pads by 100 for segmentation; the classifier does not
    return net


def classifier_alexnet(batch: int, patch: int) -> "caffe_pb2.NetParameter":
    """The ILSVRC classifier: the same layers with fc6-fc8 as InnerProduct."""
    net = convolutional_alexnet(patch, batch)
    for layer in net.layer:
        if layer.name in FULLY_CONNECTED:
            num_output = layer.convolution_param.num_output
            layer.type = "InnerProduct"
            layer.ClearField("convolution_param")
            layer.inner_product_param.num_output = num_output
    return net


def run(sizes: Sizes, scratch: str) -> Dict[str, Any]:
    fcn = Net(convolutional_alexnet(sizes.grid_image), caffe_pb2.TEST)
    randomize(fcn)
    image = random_image((1, 3, sizes.grid_image, sizes.grid_image))
    fcn.blobs["data"].data[...] = image.numpy()
    with torch.no_grad():
        fcn.forward()
    grid = tuple(fcn.blobs["fc8"].shape[2:])
    cells = [(i, j) for i in range(grid[0]) for j in range(grid[1])]
    limit = sizes.grid_image - sizes.patch
    patches = torch.cat([image[:, :, min(STRIDE * i, limit):min(STRIDE * i, limit) + sizes.patch,
                               min(STRIDE * j, limit):min(STRIDE * j, limit) + sizes.patch] for i, j in cells])
    single, batched = (Net(classifier_alexnet(b, sizes.patch), caffe_pb2.TEST) for b in (1, len(cells)))
    for net in (single, batched):
        randomize(net)
    batched.blobs["data"].data[...] = patches.numpy()

    def one_by_one() -> None:
        for k in range(len(cells)):
            single.blobs["data"].data[...] = patches[k:k + 1].numpy()
            single.forward()

    with torch.no_grad():
        single.forward()  # warm-up: one forward of each net (the 100-forward round is not repeated for it)
        batched.forward()
        timings = interleaved({"fully_convolutional": fcn.forward, "separate_patches": one_by_one,
                               "batched_patches": batched.forward}, sizes.amortize_reps, warmup=0)
    fcn_s = timings["fully_convolutional"].median
    return {
        "image": [sizes.grid_image, sizes.grid_image],
        "grid": list(grid),
        "patches": len(cells),
        "gmac": {"fully_convolutional": multiply_adds(fcn) / 1e9, "separate_patches": multiply_adds(batched) / 1e9,
                 "batched_patches": multiply_adds(batched) / 1e9},
        "timings": {name: t.as_dict() for name, t in timings.items()},
        "speedup_vs_separate": timings["separate_patches"].median / fcn_s,
        "speedup_vs_batched": timings["batched_patches"].median / fcn_s,
    }
