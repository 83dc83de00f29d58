"""Caffe's ``ImageData`` layer: images named in a list file, read as ``cv::imread`` does, transformed.

``image_data_param.source`` lists ``path label`` lines; each path is read as ``root_folder + path``
(both relative to the working directory, as in Caffe), BGR or grey (``is_color``), resized with OpenCV's
bilinear when ``new_height`` and ``new_width`` are set. Each batch is shaped by its first image, so
batch_size 1 reshapes the top per image. ``shuffle`` shuffles at setup and at every pass over the list;
``rand_skip`` starts at a random line.
"""
from __future__ import annotations

import os
from typing import Any, List

import numpy as np

from netspec import glog
from runner.data_transformer import DataTransformer
from runner.device import caffe_rng_seed
from runner.images import hwc_to_chw, read_image, read_image_list
from runner.layers.batch_source import BatchSource
from runner.registry import register


@register("ImageData")
class ImageData(BatchSource):
    """Batches of ``image_data_param.batch_size`` images with their labels."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        with self.setting_up():  # all of it is Caffe's LayerSetUp
            self._set_up(layer_param, phase)

    def _set_up(self, layer_param: Any, phase: int) -> None:
        param = layer_param.image_data_param
        self.new_height, self.new_width = int(param.new_height), int(param.new_width)
        if (self.new_height > 0) != (self.new_width > 0):
            raise ValueError(f"{self.label}: set new_height and new_width together (got {self.new_height} and "
                             f"{self.new_width})")
        self.is_color = bool(param.is_color)
        self.root_folder = param.root_folder
        self.source = param.source
        self.batch_size = self.positive("image_data_param.batch_size", param.batch_size)
        self.transformer = DataTransformer(layer_param.transform_param, phase, self.label)
        glog.info("image_data_layer.cpp:38", "Opening file %s", param.source)
        try:
            listed = read_image_list(param.source)
        except ValueError as err:
            raise ValueError(f"{self.label}: {err}") from None
        # (path as listed, label, line number, file): files resolved now, as the working directory may
        # change while batches are loaded ahead
        self.lines = [(path, label, number, os.path.abspath(self.root_folder + path))
                      for number, (path, label) in enumerate(listed, start=1)]
        self.shuffle = bool(param.shuffle)
        self._rng = np.random.default_rng(caffe_rng_seed()) if self.shuffle else None
        if self.shuffle:
            glog.info("image_data_layer.cpp:53", "Shuffling data")
            self._rng.shuffle(self.lines)
        glog.info("image_data_layer.cpp:63", "A total of %d images.", len(self.lines))
        self.position = 0
        if param.rand_skip:
            skip = caffe_rng_seed() % param.rand_skip
            glog.info("image_data_layer.cpp:70", "Skipping first %d data points.", skip)
            if skip >= len(self.lines):
                raise ValueError(f"{self.label}: rand_skip drew {skip}, but '{param.source}' lists only "
                                 f"{len(self.lines)} images")
            self.position = skip
        first = self._read(self.lines[self.position])
        channels, height, width = self.transformer.output_shape(first.shape, self._where(self.lines[self.position]))
        self.set_shapes((self.batch_size, channels, height, width), (self.batch_size,), "image_data_layer.cpp:90")
        self.prefetch(layer_param.data_param.prefetch)

    def _where(self, line: tuple) -> str:
        return f"image '{self.root_folder + line[0]}' ('{self.source}' line {line[2]})"

    def _read(self, line: tuple) -> np.ndarray:
        try:
            image = read_image(line[3], self.new_height, self.new_width, self.is_color)
        except ValueError as err:
            raise ValueError(f"{self.label}: {err} ('{self.source}' line {line[2]})") from None
        return hwc_to_chw(image)

    def load_batch(self) -> List[np.ndarray]:
        data = None
        labels = np.empty(self.batch_size, dtype=np.float32)
        for item in range(self.batch_size):
            line = self.lines[self.position]
            image = self._read(line)
            if data is None:
                shape = self.transformer.output_shape(image.shape, self._where(line))
                data = np.empty((self.batch_size,) + shape, dtype=np.float32)
            self.transformer.transform(image, data[item], self._where(line))
            labels[item] = line[1]
            self.position += 1
            if self.position == len(self.lines):
                self.position = 0
                if self.shuffle:
                    self._rng.shuffle(self.lines)
        return [data, labels]
