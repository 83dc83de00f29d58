"""``make demo``: the smallest honest end-to-end run the project supports today.

It writes an FCN-8s (VGG16 topology, narrowed so that it runs in seconds on two cores) with NetSpec,
initialises it as FCN training starts (He-normal convolutions, zero score layers replaced here by small
random ones so the output is not constant, diagonal bilinear upsampling), saves the caffemodel, loads
prototxt + caffemodel into a fresh Net as a pycaffe user would, segments a synthetic image, checks that
the reload reproduces the scores exactly, and writes the label map as a VOC-palette PNG.
"""
from __future__ import annotations

import os
import time
from typing import Dict

import numpy as np
import torch

from netspec import caffe_pb2
from netspec.backbones import deploy, fcn8s
from netspec.prototxt import write_prototxt
from runner.fillers import fill
from runner.net import Net
from solvers.score import save_label_png
from surgery.interp import interp

DEMO_WIDTHS = (16, 32, 64, 128, 128)
DEMO_FC_WIDTH = 256
NUM_CLASSES = 21


def _initialise(net: Net, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    he = caffe_pb2.FillerParameter(type="msra")
    small = caffe_pb2.FillerParameter(type="gaussian", std=0.01)
    for name, blobs in net.params.items():
        if name.startswith("upscore"):
            continue
        weight = torch.empty(blobs[0].shape)
        fill(weight, small if name.startswith("score") else he, generator)
        blobs[0].data[...] = weight.numpy()
        if len(blobs) > 1:
            blobs[1].data[...] = 0
    interp(net, [name for name in net.params if name.startswith("upscore")])


def _synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
    """A BGR, mean-subtracted CxHxW image: textured background with a disc and a thin bar."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = 40 * rng.randn(3, height, width)
    image[:, (yy - height / 2) ** 2 + (xx - width / 3) ** 2 < (height / 5) ** 2] += 80
    image[:, :, int(width * 0.75):int(width * 0.75) + 3] -= 90
    return image.astype(np.float32)


def run_demo(out_dir: str, height: int = 240, width: int = 320, seed: int = 0) -> Dict[str, float]:
    """Run the demo; returns the figures it prints."""
    os.makedirs(out_dir, exist_ok=True)
    prototxt = os.path.join(out_dir, "fcn8s-deploy.prototxt")
    weights = os.path.join(out_dir, "fcn8s-demo.caffemodel")
    write_prototxt(prototxt, deploy(fcn8s, shape=(1, 3, height, width), num_classes=NUM_CLASSES,
                                    widths=DEMO_WIDTHS, fc_width=DEMO_FC_WIDTH))
    builder = Net(prototxt, caffe_pb2.TEST)
    _initialise(builder, seed)
    builder.save(weights)

    net = Net(prototxt, caffe_pb2.TEST, weights=weights)
    image = _synthetic_image(height, width, seed)
    net.blobs["data"].data[...] = image
    builder.blobs["data"].data[...] = image
    with torch.no_grad():
        started = time.perf_counter()
        score = net.forward()["score"].copy()
        seconds = time.perf_counter() - started
        reference = builder.forward()["score"]
    labels = score[0].argmax(axis=0).astype(np.uint8)
    save_label_png(labels, os.path.join(out_dir, "fcn8s-demo-labels.png"))
    crops = {layer.name: list(layer.crop_param.offset) for layer in net.to_proto().layer if layer.type == "Crop"}
    figures = {"forward_seconds": seconds, "max_abs_reload_difference": float(np.max(np.abs(score - reference))),
               "classes_predicted": int(len(np.unique(labels)))}
    print(f"FCN-8s (VGG16 topology, widths {DEMO_WIDTHS}, fc {DEMO_FC_WIDTH}) written to {prototxt}")
    print(f"crop offsets derived by coord maps: {crops}")
    print(f"caffemodel saved and reloaded: {weights} ({os.path.getsize(weights) / 1e6:.1f} MB)")
    print(f"score {tuple(score.shape)} for a {height}x{width} image in {seconds:.2f} s; "
          f"reload reproduces it exactly: {figures['max_abs_reload_difference'] == 0.0}")
    print(f"label map (VOC palette): {os.path.join(out_dir, 'fcn8s-demo-labels.png')}")
    return figures
