"""Caffe's DataTransformer: the ``transform_param`` of data layers, in Caffe's order and float32 arithmetic.

For every item: decide the mirror (``mirror && Rand(2)``: in TEST too, Caffe has no phase test there),
then the crop offsets (random in TRAIN, centred ``((H-c)//2, (W-c)//2)`` otherwise), then
``out = (pixel - mean) * scale`` with the mean taken at the pixel's source position (a mean file is
cropped with the image) and the crop written mirrored. Computed in float32 as Caffe's ``Dtype``, the
results equal real Caffe's bit for bit. The random choices are Caffe's ``Rand(n)``: the next output of the
transformer's own mt19937 modulo n, that generator seeded by a draw from the global one (InitRand), so
that after ``caffe.set_random_seed`` they are real Caffe's (``runner.caffe_rng``).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from google.protobuf.message import DecodeError

from netspec import caffe_pb2, glog
from netspec.caffemodel import blob_shape
from runner.datum import datum_pixels
from runner.caffe_rng import MT19937
from runner.device import caffe_rng_seed

TRAIN = caffe_pb2.TRAIN


def read_mean_file(path: str) -> np.ndarray:
    """A ``compute_image_mean`` BlobProto as the CxHxW float32 mean Caffe subtracts (its first item)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise ValueError(f"cannot read mean file '{path}': {err.strerror}") from None
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(raw)
    except DecodeError as err:
        raise ValueError(f"mean file '{path}' is not a Caffe BlobProto ({err})") from None
    shape = blob_shape(blob)
    if len(shape) > 4 or not shape:
        raise ValueError(f"mean file '{path}' has shape {shape}; Caffe needs a 1xCxHxW mean")
    values = np.asarray(blob.double_data if len(blob.double_data) else blob.data, dtype=np.float32)
    legacy = (1,) * (4 - len(shape)) + tuple(shape)
    if values.size != int(np.prod(legacy)) or values.size == 0:
        raise ValueError(f"mean file '{path}' holds {values.size} values for its shape {shape}")
    return values.reshape(legacy)[0]


def needs_rand(mirror: bool, crop_size: int, phase: int) -> bool:
    """Whether Caffe's transformer draws: a mirror, or a random crop (TRAIN)."""
    return bool(mirror) or (phase == TRAIN and crop_size > 0)


def _dims(shape: Tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


class DataTransformer:
    """One layer's transformation of CxHxW items (uint8 or float32) into float32 CxHxW outputs."""

    def __init__(self, param: Any, phase: int, layer: str) -> None:
        self.layer = layer
        self.scale = np.float32(param.scale)
        self.mirror = bool(param.mirror)
        self.crop_size = int(param.crop_size)
        self.force_color = bool(param.force_color)
        self.force_gray = bool(param.force_gray)
        self.phase = phase
        self.mean_file = param.mean_file if param.HasField("mean_file") else None
        if self.mean_file is not None and len(param.mean_value):
            raise ValueError(f"{layer}: transform_param sets both mean_file and mean_value; give one")
        self.mean: Optional[np.ndarray] = None
        if self.mean_file is not None:
            glog.info("data_transformer.cpp:25", "Loading mean file from: %s", self.mean_file)
            self.mean = read_mean_file(self.mean_file)
        self.mean_values = np.asarray(param.mean_value, dtype=np.float32)
        self.random_crop = phase == TRAIN and self.crop_size > 0
        self._rng: Optional[MT19937] = None
        self.init_rand()

    def init_rand(self) -> None:
        """Caffe's InitRand: a generator of its own, seeded from the global one, where a draw is needed
        (prefetching layers call it again when they start, as Caffe's do)."""
        if needs_rand(self.mirror, self.crop_size, self.phase):
            self._rng = MT19937(caffe_rng_seed())

    def rand(self, n: int) -> int:
        """Caffe's Rand(n)."""
        return self._rng() % n

    # ----- decoding -----
    def decode(self, datum: "caffe_pb2.Datum", where: str) -> np.ndarray:
        """The Datum's CxHxW pixels; encoded ones decoded natively or as force_color/force_gray ask."""
        mode = "unchanged"
        if self.force_color or self.force_gray:
            if not datum.encoded:  # Caffe logs this for every item and carries on
                glog.error("data_transformer.cpp:152", "force_color and force_gray only for encoded datum")
            elif self.force_color and self.force_gray:
                raise ValueError(f"{self.layer}: cannot set both force_color and force_gray")
            else:
                mode = "color" if self.force_color else "gray"
        return datum_pixels(datum, where, mode)

    # ----- shapes -----
    def output_shape(self, image_shape: Tuple[int, ...], where: str) -> Tuple[int, int, int]:
        """Caffe's InferBlobShape: the CxHxW an item of this shape becomes."""
        channels, height, width = image_shape
        if self.crop_size and (height < self.crop_size or width < self.crop_size):
            raise ValueError(f"{self.layer}: crop_size {self.crop_size} is larger than {where} "
                             f"({_dims(image_shape)})")
        if self.crop_size:
            return channels, self.crop_size, self.crop_size
        return channels, height, width

    # ----- the transformation -----
    def transform(self, image: np.ndarray, out: np.ndarray, where: str) -> None:
        """Write the transformed ``image`` (CxHxW) into ``out`` (the batch's CxHxW slot for it)."""
        shape = self.output_shape(image.shape, where)
        if shape != out.shape:
            raise ValueError(f"{self.layer}: {where} is {_dims(image.shape)}, but the batch is {_dims(out.shape)}, "
                             f"shaped by its first item (items of one batch must have one size: resize them, "
                             f"or use batch_size 1)")
        channels, height, width = image.shape
        do_mirror = self.mirror and bool(self.rand(2))
        h_off = w_off = 0
        if self.crop_size:
            if self.random_crop:
                h_off = self.rand(height - self.crop_size + 1)
                w_off = self.rand(width - self.crop_size + 1)
            else:
                h_off, w_off = (height - self.crop_size) // 2, (width - self.crop_size) // 2
        rows, cols = slice(h_off, h_off + shape[1]), slice(w_off, w_off + shape[2])
        values = image[:, rows, cols].astype(np.float32)
        if self.mean is not None:
            if self.mean.shape != image.shape:
                raise ValueError(f"{self.layer}: mean file '{self.mean_file}' is {_dims(self.mean.shape)}, "
                                 f"{where} is {_dims(image.shape)}; the mean must have the items' size")
            values -= self.mean[:, rows, cols]
        elif self.mean_values.size:
            if self.mean_values.size not in (1, channels):
                raise ValueError(f"{self.layer}: {self.mean_values.size} mean_value values for {channels} "
                                 f"channels; specify either 1 mean_value or as many as channels")
            values -= self.mean_values.reshape(-1, 1, 1)
        values *= self.scale
        out[...] = values[:, :, ::-1] if do_mirror else values
