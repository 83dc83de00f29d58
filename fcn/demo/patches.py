"""The demo classifier's data: square patches of the synthetic VOC training images, labelled by the class
of their centre pixel, as an ImageNet-style classifier sees one object per image. Classes are drawn
uniformly (then a pixel of that class), so that the classifier learns the objects, not the background
that covers most pixels."""
from __future__ import annotations

import ast
from typing import List

import numpy as np

from data_layers.catalog import open_layer
from runner.blob import Blob
from runner.python_layer import Layer


class PatchLayer(Layer):
    """Python data layer: tops ``data`` (N x 3 x P x P, BGR minus the VOC mean) and ``label`` (N).

    param_str: ``voc_dir``, ``split``, ``batch``, ``patch``, ``seed``. Every image of the split is decoded
    once by the real VOC data layer; patches are then cut around pixels of uniformly drawn classes.
    """

    def setup(self, bottom: List[Blob], top: List[Blob]) -> None:
        params = ast.literal_eval(self.param_str)
        self.batch, self.patch = int(params["batch"]), int(params["patch"])
        self.rng = np.random.RandomState(int(params.get("seed", 0)))
        layer, _ = open_layer("voc", dict(voc_dir=params["voc_dir"], split=params["split"], prefetch=0,
                                          randomize=False))
        samples = [layer.load(sample_id) for sample_id in layer.ids]
        layer.close()
        half = self.patch // 2
        self.images = [np.pad(s["data"], ((0, 0), (half, half), (half, half))) for s in samples]
        self.labels = [s["label"][0] for s in samples]
        self.by_class = {}  # class -> list of (image index, pixel coordinates of that class)
        for k, label in enumerate(self.labels):
            for cls in np.unique(label):
                if cls != 255:
                    self.by_class.setdefault(int(cls), []).append((k, np.argwhere(label == cls)))
        self.classes = sorted(self.by_class)

    def reshape(self, bottom: List[Blob], top: List[Blob]) -> None:
        top[0].reshape(self.batch, 3, self.patch, self.patch)
        top[1].reshape(self.batch)

    def forward(self, bottom: List[Blob], top: List[Blob]) -> None:
        for i in range(self.batch):
            places = self.by_class[self.classes[self.rng.randint(len(self.classes))]]
            k, pixels = places[self.rng.randint(len(places))]
            y, x = pixels[self.rng.randint(len(pixels))]
            top[0].data[i] = self.images[k][:, y:y + self.patch, x:x + self.patch]
            top[1].data[i] = self.labels[k][y, x]
