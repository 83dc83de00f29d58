"""``Segmenter``: a deploy prototxt and a caffemodel as one object that labels pictures.

It does what the FCN release's ``infer.py`` does by hand (RGB to BGR, subtract the mean, CxHxW, reshape
the input to the picture, forward, argmax of ``score``), for any picture size. The net is built once
by the pycaffe-compatible runner; each picture then runs through its graph as a tensor on the chosen
device, so that on a GPU only the picture goes up and only the answer comes back.
"""
from __future__ import annotations

import os
from typing import Any, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from data_layers.readers import open_checked_image
from fcn.net_loading import NetFile, PathLike, load_net
from netspec import caffe_pb2

#: PASCAL VOC's mean pixel in BGR order, the one every released FCN model subtracts.
VOC_MEAN = (104.00698793, 116.66876762, 122.67891434)
#: ``speed`` choices: Net.set_speed keywords. "exact" is Caffe's float32 (on the CPU through oneDNN with packed
#: weights, runner.fusion); "winograd" rounds about 1e-5 of the scores' magnitude per layer on the CPU (NNPACK:
#: faster than "exact" on some CPUs, slower on BENCHMARKS.md's); "bf16" about 1e-2 (3.7x faster there).
SPEEDS = {"exact": {}, "winograd": dict(winograd=True), "bf16": dict(autocast=torch.bfloat16)}

ImageLike = Union[PathLike, Image.Image, np.ndarray]
DeviceLike = Union[None, str, int, torch.device]


def load_rgb(path: PathLike) -> np.ndarray:
    """An image file as an HxWx3 uint8 RGB array (grey and palette pictures converted, alpha dropped)."""
    try:
        with open_checked_image(path) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError(f"{os.fspath(path)}: not an image file PIL can read") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{os.fspath(path)}: image file not found") from None
    except OSError as err:  # truncated or corrupt data, found while decoding
        raise ValueError(f"{os.fspath(path)}: cannot decode the picture ({err})") from None


def resolve_device(device: DeviceLike) -> torch.device:
    """``None``: the first GPU when CUDA is present, else the CPU; an int is a CUDA device index."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {resolved}: CUDA is not available on this machine")
        if (resolved.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"device {resolved}: only {torch.cuda.device_count()} CUDA device(s) present")
    return resolved


class Segmenter:
    """Semantic segmentation with a Caffe deploy net: ``predict(image)`` gives an HxW uint8 label map,
    ``predict_proba(image)`` the CxHxW class probabilities (softmax of the ``blob`` output).

    ``image`` is a file path, a PIL image or an HxWx3 RGB array with values in 0..255 (an HxW array is
    taken as grey). ``mean`` is the BGR mean pixel subtracted before the forward; ``device`` a torch
    device, a CUDA index or None for the GPU when present; ``speed`` one of ``SPEEDS``. Weights may be
    current or V1 caffemodels, legacy blob dims included; a weight that does not fit the deploy net is an
    error naming the layer and both shapes.
    """

    def __init__(self, deploy: NetFile, weights: PathLike, mean: Sequence[float] = VOC_MEAN,
                 device: DeviceLike = None, blob: str = "score", allow_python_layers: bool = False,
                 speed: str = "exact") -> None:
        if len(mean) != 3:
            raise ValueError(f"mean must hold 3 values (B, G, R), got {list(mean)}")
        if speed not in SPEEDS:
            raise ValueError(f"speed must be one of {', '.join(SPEEDS)}, got {speed!r}")
        self.mean = tuple(float(m) for m in mean)
        self.device = resolve_device(device)
        self.net = load_net(deploy, caffe_pb2.TEST, weights=weights, allow_python_layers=allow_python_layers)
        inputs = self.net.inputs
        if len(inputs) != 1:
            raise ValueError(f"Segmenter feeds one image input; net '{self.net.name}' has inputs {inputs}")
        self.input = inputs[0]
        channels = self.net.blobs[self.input].shape[1:2]
        if channels != (3,):
            raise ValueError(f"input '{self.input}' has shape {self.net.blobs[self.input].shape}; "
                             f"Segmenter feeds 3-channel (BGR) pictures")
        if blob not in self.net.blobs:
            raise ValueError(f"net '{self.net.name}' has no blob '{blob}' (outputs: {self.net.outputs})")
        self.blob = blob
        self._mean = torch.tensor(self.mean, dtype=torch.float32, device=self.device).reshape(3, 1, 1)
        self._graph = self.net.graph.to(self.device)
        self.net.set_speed(**SPEEDS[speed])

    def predict(self, image: ImageLike) -> np.ndarray:
        """The label map: argmax over classes of the output blob, HxW uint8."""
        return self._labels(self._scores(image)).cpu().numpy()

    def predict_proba(self, image: ImageLike) -> np.ndarray:
        """Class probabilities: softmax over classes of the output blob, CxHxW float32."""
        return torch.softmax(self._scores(image), dim=0).cpu().numpy()

    def predict_with_proba(self, image: ImageLike) -> Tuple[np.ndarray, np.ndarray]:
        """``(predict(image), predict_proba(image))`` from one forward pass."""
        scores = self._scores(image)
        return self._labels(scores).cpu().numpy(), torch.softmax(scores, dim=0).cpu().numpy()

    def _labels(self, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] > 256:
            raise ValueError(f"blob '{self.blob}' has {scores.shape[0]} classes; uint8 labels hold 256")
        return scores.argmax(dim=0).to(torch.uint8)

    def _scores(self, image: ImageLike) -> torch.Tensor:
        """The output blob for one picture, batch axis dropped, on the device."""
        pixels = torch.tensor(_rgb_array(image)).to(self.device, torch.float32)
        data = (pixels.flip(-1).permute(2, 0, 1) - self._mean).unsqueeze(0)
        with torch.no_grad():
            self._graph.forward(**{self.input: data})
            # float32 whatever the speed: under autocast only the net's outputs are made float32 again
            return self._graph.blobs[self.blob].tensor()[0].float()


def _rgb_array(image: Any) -> np.ndarray:
    """HxWx3 RGB values from a path, a PIL image or an array (HxW grey is repeated over 3 channels)."""
    if isinstance(image, (str, os.PathLike)):
        return load_rgb(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB picture (or HxW grey), got an array of shape {array.shape}")
    return np.ascontiguousarray(array)
