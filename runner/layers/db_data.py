"""Caffe's ``Data`` layer: Datum records from an LMDB or LevelDB, in key order, through the DataTransformer.

As Caffe: the first record sizes the tops at construction; each batch is shaped by its first record
(so batch_size 1 follows records of varying size); after the last record reading starts over at the
first; labels are a float top of shape (batch_size,). Raw (uint8 or float_data) and encoded (PNG/JPEG)
records are both read; the backend is ``data_param.backend`` (Caffe's default: LEVELDB).
"""
from __future__ import annotations

from typing import Any, List

import numpy as np

from netspec import glog
from runner.data_transformer import DataTransformer
from runner.datum import parse_datum
from runner.db import DatabaseReader
from runner.layers.batch_source import BatchSource
from runner.registry import register


@register("Data")
class Data(BatchSource):
    """Batches of ``data_param.batch_size`` records from ``data_param.source``."""

    min_tops = 1

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.data_param
        self.batch_size = self.positive("data_param.batch_size", param.batch_size)
        try:
            self.db = DatabaseReader(param.source, param.backend)
        except ValueError as err:
            raise ValueError(f"{self.label}: {err}") from None
        with self.setting_up():  # Caffe's constructor opened the database; the rest is its LayerSetUp
            self._set_up(layer_param, phase)

    def _set_up(self, layer_param: Any, phase: int) -> None:
        param = layer_param.data_param
        self.transformer = DataTransformer(layer_param.transform_param, phase, self.label)
        try:
            first = self.db.read(None, 1)[0]
        except ValueError as err:
            raise ValueError(f"{self.label}: {err}") from None
        image = self._pixels(*first)[1]
        channels, height, width = self.transformer.output_shape(image.shape, self._where(first[0]))
        self.set_shapes((self.batch_size, channels, height, width), (self.batch_size,), "data_layer.cpp:45")
        self._last_key = None  # the key of the last record read: the next batch starts after it
        self.prefetch(param.prefetch)

    def _where(self, key: bytes) -> str:
        return f"record '{key.decode('utf-8', 'replace')}' of {self.db.title} '{self.db.source}'"

    def _pixels(self, key: bytes, value: bytes) -> tuple:
        where = self._where(key)
        datum = parse_datum(value, f"{self.label}: {where}")
        return datum, self.transformer.decode(datum, f"{self.label}: {where}")

    def load_batch(self) -> List[np.ndarray]:
        data = labels = None
        records = self.db.read(self._last_key, self.batch_size)
        previous = self._last_key
        self._last_key = records[-1][0]
        for item, (key, value) in enumerate(records):
            if previous is not None and key <= previous:  # keys ascend: the read started over
                glog.info("data_layer.cpp:73", "Restarting data prefetching from start.")
            previous = key
            datum, image = self._pixels(key, value)
            if data is None:
                shape = self.transformer.output_shape(image.shape, self._where(key))
                data = np.empty((self.batch_size,) + shape, dtype=np.float32)
                labels = np.empty(self.batch_size, dtype=np.float32)
            self.transformer.transform(image, data[item], self._where(key))
            labels[item] = datum.label
        return [data, labels]
