"""The demo classifier's data, its ImageNet: square pictures with one object class each, labelled by it.

The pictures come from the same scene generator as the VOC-format dataset (same classes, same looks, same
background clutter) but each shows objects of a single class (class 0: background alone), and with seeds
of their own, so the classifier never sees the segmentation splits: like ImageNet and PASCAL, the two
share classes, not pictures. A pool of pictures per class is rendered once (a few milliseconds each) and
drawn from with random mirroring. An earlier version labelled patches of the segmentation pictures by
their centre pixel: after five max-poolings that label is ambiguous, and 2,000 iterations reached 40%
accuracy; one class per picture is the classification task ImageNet poses.
"""
from __future__ import annotations

from dataclasses import replace
from typing import List

import numpy as np

from data_layers.params import parse_param_str
from data_layers.scenes import render
from data_layers.synthetic import RECIPES
from data_layers.transforms import image_blob
from data_layers.voc import VOC_MEAN_BGR
from runner.blob import Blob
from runner.python_layer import Layer


def class_pictures(cls: int, count: int, size: int, seed: int) -> np.ndarray:
    """``count`` x size x size x 3 uint8 RGB pictures whose objects are all of class ``cls``."""
    recipe = replace(RECIPES["voc"], objects=(cls,), void_outline=False, jitter_size=False)
    return np.stack([render(recipe, (size, size), np.random.default_rng([seed, cls, k])).rgb
                     for k in range(count)])


class PatchLayer(Layer):
    """Python data layer: tops ``data`` (N x 3 x P x P, BGR minus the VOC mean) and ``label`` (N).

    param_str: ``batch``, ``patch`` (P), ``per_class`` (pictures rendered per class), ``classes``, ``seed``.
    """

    def setup(self, bottom: List[Blob], top: List[Blob]) -> None:
        params = parse_param_str(self.param_str, ("batch", "patch", "per_class", "classes", "seed"), (),
                                 "PatchLayer")
        self.batch, self.patch = int(params["batch"]), int(params["patch"])
        self.rng = np.random.RandomState(int(params["seed"]))
        self.mean = np.array(VOC_MEAN_BGR)
        self.pictures = [class_pictures(cls, int(params["per_class"]), self.patch, int(params["seed"]))
                         for cls in range(int(params["classes"]))]

    def reshape(self, bottom: List[Blob], top: List[Blob]) -> None:
        top[0].reshape(self.batch, 3, self.patch, self.patch)
        top[1].reshape(self.batch)

    def forward(self, bottom: List[Blob], top: List[Blob]) -> None:
        for i in range(self.batch):
            cls = self.rng.randint(len(self.pictures))
            picture = self.pictures[cls][self.rng.randint(len(self.pictures[cls]))]
            if self.rng.randint(2):
                picture = picture[:, ::-1]
            top[0].data[i] = image_blob(picture, self.mean)
            top[1].data[i] = cls
