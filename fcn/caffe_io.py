"""What `caffe.io` gives a pycaffe user: blob/datum conversions, image loading and the Transformer.

Scripts written against pycaffe call these helpers by name and rely on their exact
results (a mean file read back as an array, an image preprocessed for a net), so the
behaviour follows pycaffe's: same shapes, same order of preprocessing steps, same
resizing rules.  Images are read with PIL and resized with scipy instead of
scikit-image, reproducing what scikit-image's ``resize`` computes for pycaffe.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image
from scipy import ndimage

from netspec import caffe_pb2

# Luminance weights scikit-image uses for colour-to-grey, which pycaffe's
# ``load_image(color=False)`` inherits.
_GREY_WEIGHTS = np.array([0.2125, 0.7154, 0.0721])
# PIL's one-value-per-pixel modes, with the divisor that maps each to [0, 1]: bilevel and
# float pixels already lie there, the "I" modes come from 16-bit files.
_GREY_MODE_RANGES = {"1": 1.0, "F": 1.0, "L": 255.0, "I": 65535.0,
                     "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


# -- proto / datum / ndarray conversion ------------------------------------------------

def _has_legacy_shape(blob: caffe_pb2.BlobProto) -> bool:
    """Caffe reads num/channels/height/width whenever any of them is set, before `shape`."""
    return any(blob.HasField(name) for name in ("num", "channels", "height", "width"))


def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """The blob's data (or diff) as a float64 array of the blob's shape, as pycaffe returns it
    (``np.array`` of the repeated field); ``double_data``/``double_diff`` are read when present.
    """
    doubles, floats = (blob.double_diff, blob.diff) if return_diff else (blob.double_data, blob.data)
    values = np.array(doubles if len(doubles) else floats, dtype=np.float64)
    if _has_legacy_shape(blob):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    if values.size != int(np.prod(shape)):
        which = "diff" if return_diff else "data"
        raise ValueError(f"blob {which} holds {values.size} values but its shape {shape} "
                         f"needs {int(np.prod(shape))}")
    return values.reshape(shape)


def array_to_blobproto(arr: ArrayLike, diff: ArrayLike | None = None) -> caffe_pb2.BlobProto:
    """A BlobProto holding `arr` (and `diff`, which must have the same shape), shape in `shape.dim`."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.astype(np.float32).ravel().tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ValueError(f"diff must have the data's shape {arr.shape}, got {diff.shape}")
        blob.diff.extend(diff.astype(np.float32).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist: Iterable[ArrayLike]) -> bytes:
    """Serialised BlobProtoVector of the arrays, the format of a multi-blob mean file."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(arr) for arr in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(serialized: bytes) -> list[np.ndarray]:
    """The arrays of a serialised BlobProtoVector, in order."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(serialized)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr: ArrayLike, label: int | None = None) -> caffe_pb2.Datum:
    """A Datum of a CxHxW array: uint8 goes to the `data` bytes, anything else to `float_data`."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError(f"a Datum holds a 3-D (channels, height, width) array, got shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float32).ravel().tolist())
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum: caffe_pb2.Datum) -> np.ndarray:
    """The Datum's CxHxW array: uint8 from `data`, float64 from `float_data`.

    The label stays on the datum, as in pycaffe.
    """
    shape = (datum.channels, datum.height, datum.width)
    if datum.encoded:
        raise ValueError("datum is encoded: its data holds compressed image bytes, not a "
                         f"{shape} pixel array; decode them with PIL.Image.open(io.BytesIO(datum.data))")
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    return np.array(datum.float_data, dtype=np.float64).reshape(shape)


# -- image IO ---------------------------------------------------------------------------

def _pixels_as_float(img: Image.Image) -> np.ndarray:
    """Pixel values scaled to [0, 1] by their integer range, as scikit-image's img_as_float does."""
    return np.asarray(img, dtype=np.float64) / _GREY_MODE_RANGES.get(img.mode, 255.0)


def load_image(filename: str, color: bool = True) -> np.ndarray:
    """An image file as float32 HxWxC in [0, 1]: RGB (grey tiled, alpha dropped) or, with
    ``color=False``, HxWx1 luminance."""
    with Image.open(filename) as img:
        img.load()
        if img.mode in _GREY_MODE_RANGES:
            grey = _pixels_as_float(img)
        elif img.mode == "LA":
            grey = _pixels_as_float(img.getchannel("L"))
        else:
            rgb = _pixels_as_float(img.convert("RGB"))
            if color:
                return rgb.astype(np.float32)
            grey = rgb @ _GREY_WEIGHTS
    grey = grey.astype(np.float32)[:, :, np.newaxis]
    return np.tile(grey, (1, 1, 3)) if color else grey


def _resize_unit_range(im: np.ndarray, new_dims: tuple[int, int], order: int) -> np.ndarray:
    """scikit-image's ``resize(im, new_dims, order)`` for an image scaled to [0, 1]:
    Gaussian anti-aliasing along shrunk axes, pixel-area (grid) sampling with zero
    outside, and the result clipped to the input's range."""
    factors = np.array(im.shape, dtype=np.float64) / np.array(new_dims + (im.shape[2],), dtype=np.float64)
    if np.any(factors > 1):
        im = ndimage.gaussian_filter(im, np.maximum(0, (factors - 1) / 2), mode="constant", cval=0.0)
    out = ndimage.zoom(im, 1 / factors, order=order, mode="grid-constant", cval=0.0, grid_mode=True)
    return out if order == 0 else np.clip(out, 0.0, 1.0)


def resize_image(im: ArrayLike, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """An HxWxK image resized to ``new_dims`` (height, width) as float32, keeping K and the value range.

    One- and three-channel images are interpolated the way scikit-image does it for
    pycaffe; other channel counts go through plain ``scipy.ndimage.zoom``, as pycaffe's do.
    """
    im = np.asarray(im)
    if im.ndim != 3:
        raise ValueError(f"resize_image expects an HxWxK image, got shape {im.shape}")
    if len(new_dims) != 2:
        raise ValueError(f"new_dims must be (height, width), got {tuple(new_dims)}")
    new_dims = (int(new_dims[0]), int(new_dims[1]))
    if im.shape[-1] not in (1, 3):
        scale = tuple(np.array(new_dims, dtype=np.float64) / np.array(im.shape[:2]))
        return ndimage.zoom(im, scale + (1,), order=interp_order).astype(np.float32)
    im_min, im_max = float(im.min()), float(im.max())
    if im_max <= im_min:
        return np.full(new_dims + (im.shape[-1],), im_min, dtype=np.float32)
    unit = (im.astype(np.float64) - im_min) / (im_max - im_min)
    resized = _resize_unit_range(unit, new_dims, interp_order)
    return (resized * (im_max - im_min) + im_min).astype(np.float32)


def oversample(images: Sequence[ArrayLike], crop_dims: Sequence[int]) -> np.ndarray:
    """Ten crops per HxWxK image: the four corners, the centre, then those five mirrored left-right.

    Gives a (10*N, crop_h, crop_w, K) float32 array, the crops of each image together,
    for averaging a classifier's scores over them.
    """
    images = [np.asarray(im) for im in images]
    height, width = images[0].shape[:2]
    crop_h, crop_w = int(crop_dims[0]), int(crop_dims[1])
    if crop_h > height or crop_w > width:
        raise ValueError(f"crop_dims {(crop_h, crop_w)} exceed the image size {(height, width)}")
    corners = [(top, left) for top in (0, height - crop_h) for left in (0, width - crop_w)]
    # The centre crop starts at the truncated (centre - half crop), as pycaffe's integer array does.
    centre = (int(height / 2.0 - crop_h / 2.0), int(width / 2.0 - crop_w / 2.0))
    crops = np.empty((10 * len(images), crop_h, crop_w, images[0].shape[-1]), dtype=np.float32)
    for n, im in enumerate(images):
        if im.shape != images[0].shape:
            raise ValueError(f"oversample needs images of one shape: image {n} is {im.shape}, "
                             f"image 0 is {images[0].shape}")
        five = [im[top:top + crop_h, left:left + crop_w] for top, left in corners + [centre]]
        crops[10 * n:10 * n + 5] = five
        crops[10 * n + 5:10 * n + 10] = [crop[:, ::-1] for crop in five]
    return crops


# -- preprocessing ----------------------------------------------------------------------

class Transformer:
    """Turns HxWxK images into a net input blob's KxHxW layout and back, per input name.

    Built from ``{input name: blob shape}``; each ``set_*`` configures one step for one
    input, and ``preprocess`` applies them in pycaffe's order: resize to the blob's
    HxW, transpose, channel swap, raw scale, mean subtraction, input scale.
    """

    def __init__(self, inputs: Mapping[str, Sequence[int]]) -> None:
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose: dict[str, tuple[int, ...]] = {}
        self.channel_swap: dict[str, tuple[int, ...]] = {}
        self.raw_scale: dict[str, float] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.input_scale: dict[str, float] = {}

    def _check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise ValueError(f"{in_!r} is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_: str, data: ArrayLike) -> np.ndarray:
        """An HxWxK image as float32 input for blob `in_`; the caller's array is left untouched."""
        self._check_input(in_)
        caffe_in = np.array(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            caffe_in *= self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in -= self.mean[in_]
        if in_ in self.input_scale:
            caffe_in *= self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_: str, data: ArrayLike) -> np.ndarray:
        """Undo `preprocess` (all but the resize) on blob data; like pycaffe, size-1 axes are squeezed."""
        self._check_input(in_)
        decaf_in = np.array(data).squeeze()
        if not np.issubdtype(decaf_in.dtype, np.floating):
            decaf_in = decaf_in.astype(np.float32)
        if in_ in self.input_scale:
            decaf_in /= self.input_scale[in_]
        if in_ in self.mean:
            decaf_in += self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        """Axis order taking the HxWxK image to the blob's KxHxW, e.g. (2, 0, 1)."""
        self._check_input(in_)
        wanted = len(self.inputs[in_]) - 1
        if len(order) != wanted:
            raise ValueError(f"Transpose order needs to have the same number of dimensions as the "
                             f"input: {in_!r} has {wanted} per item, order {tuple(order)} has {len(order)}")
        self.transpose[in_] = tuple(int(axis) for axis in order)

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        """Channel order applied after the transpose, e.g. (2, 1, 0) for RGB to BGR."""
        self._check_input(in_)
        channels = self.inputs[in_][1]
        if len(order) != channels:
            raise ValueError(f"Channel swap needs to have the same number of dimensions as the input "
                             f"channels: {in_!r} has {channels}, order {tuple(order)} has {len(order)}")
        self.channel_swap[in_] = tuple(int(c) for c in order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """Factor taking [0, 1] images to the net's raw range (255 for Caffe's ImageNet nets).

        Applied before the mean, so the mean is given in that raw range.
        """
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: ArrayLike) -> None:
        """Mean subtracted after the raw scale: one value per channel, or a KxHxW
        (for one channel, HxW) image of exactly the blob's size."""
        self._check_input(in_)
        mean = np.asarray(mean)
        shape = self.inputs[in_]
        if mean.ndim == 1:
            if mean.shape[0] != shape[1]:
                raise ValueError(f"Mean channels incompatible with input {in_!r}: it has {shape[1]} "
                                 f"channels, the mean {mean.shape[0]} values")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            mean_shape = (1,) + mean.shape if mean.ndim == 2 else mean.shape
            if len(mean_shape) != 3:
                raise ValueError(f"Mean shape invalid for input {in_!r}: expected a per-channel vector "
                                 f"or a KxHxW mean image, got shape {mean.shape}")
            if mean_shape != shape[1:]:
                raise ValueError(f"Mean shape incompatible with input shape: {in_!r} expects "
                                 f"{shape[1:]}, the mean is {mean_shape}")
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Factor applied last, after mean subtraction (e.g. 0.017 for std-normalised nets)."""
        self._check_input(in_)
        self.input_scale[in_] = scale
