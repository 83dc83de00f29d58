"""Caffe's ``WindowData`` layer (R-CNN fine-tuning): windows cut from images, warped to crop_size x crop_size.

The window file lists images and their boxes::

    # 0            <- image index, 0, 1, ... in order
    img/path.jpg   <- read as root_folder + path, always in colour (BGR)
    3 480 640      <- channels height width
    2              <- number of windows
    <class> <overlap> <x1> <y1> <x2> <y2>   (one line per window, inclusive pixel coordinates)

Windows with overlap >= fg_threshold are foreground (their class must be positive), those below
bg_threshold background (label and overlap become 0); the rest are unused. Each batch draws
``int(batch_size * fg_fraction)`` foreground windows after the background ones, each uniformly with a
random mirror, and follows Caffe's load_batch exactly: ``context_pad`` and ``crop_mode: "square"`` widen
the box around its centre (float32 arithmetic, C rounding), the part outside the image becomes zero
padding, the rest is resized with OpenCV's bilinear into its place and written as
``(pixel - mean) * window_data_param.scale`` (WindowData's own scale; the mean from transform_param,
a mean file read around its centre).
"""
from __future__ import annotations

import math
import os
from typing import Any, List, Tuple

import numpy as np

from runner.caffe_rng import MT19937
from runner.data_transformer import needs_rand, read_mean_file
from runner.device import caffe_rng_seed
from runner.images import cv2_module, decode_image, read_image
from runner.layers.batch_source import BatchSource
from runner.registry import register

Window = Tuple[int, int, float, int, int, int, int]  # image index, label, overlap, x1, y1, x2, y2
f32 = np.float32


def _round(value: np.float32) -> int:
    """C's round(): halves away from zero."""
    return int(math.copysign(math.floor(abs(float(value)) + 0.5), float(value)))


@register("WindowData")
class WindowData(BatchSource):
    """Batches of background then foreground windows, warped to ``transform_param.crop_size``."""

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param, transform = layer_param.window_data_param, layer_param.transform_param
        self._transformer_draws = needs_rand(transform.mirror, transform.crop_size, phase)
        self.init_transformer_rand()
        self.batch_size = self.positive("window_data_param.batch_size", param.batch_size)
        self.crop_size = self.positive("transform_param.crop_size", transform.crop_size)
        self.context_pad = int(param.context_pad)
        if 2 * self.context_pad >= self.crop_size:
            raise ValueError(f"{self.label}: context_pad {self.context_pad} leaves no room in crop_size "
                             f"{self.crop_size}")
        if param.crop_mode not in ("warp", "square"):
            raise ValueError(f"{self.label}: crop_mode must be \"warp\" or \"square\", got {param.crop_mode!r}")
        self.square = param.crop_mode == "square"
        self.mirror = bool(transform.mirror)
        self.scale = f32(param.scale)
        self.fg_fraction = f32(param.fg_fraction)
        self.source = param.source
        self.images, self.fg_windows, self.bg_windows, channels = self._read_window_file(
            param.source, param.root_folder, f32(param.fg_threshold), f32(param.bg_threshold))
        self.cache = [self._file_bytes(path) for path, _ in self.images] if param.cache_images else None
        self.mean = read_mean_file(transform.mean_file) if transform.HasField("mean_file") else None
        self.mean_values = np.asarray(transform.mean_value, dtype=np.float32)
        if self.mean is not None and len(self.mean_values):
            raise ValueError(f"{self.label}: transform_param sets both mean_file and mean_value; give one")
        if len(self.mean_values) not in (0, 1, channels):
            raise ValueError(f"{self.label}: {len(self.mean_values)} mean_value values for {channels} channels; "
                             f"specify either 1 mean_value or as many as channels")
        if channels != 3:
            raise ValueError(f"{self.label}: window file '{param.source}' gives its last image {channels} channels; "
                             f"WindowData reads every image in colour (3 channels)")
        if self.mean is not None:
            mean_c, mean_h, mean_w = self.mean.shape
            centre = (mean_w - self.crop_size) // 2
            if mean_c != channels or mean_w < self.crop_size or mean_h < centre + self.crop_size:
                raise ValueError(f"{self.label}: mean file '{transform.mean_file}' is {mean_c}x{mean_h}x{mean_w}; "
                                 f"WindowData takes a crop_size {self.crop_size} square of {channels} channels from "
                                 f"its centre (offset by the width on both axes)")
        self._rng = MT19937(caffe_rng_seed())  # Caffe's prefetch_rng_: PrefetchRand() is its next output
        self.set_shapes((self.batch_size, channels, self.crop_size, self.crop_size), (self.batch_size,))
        self.prefetch(layer_param.data_param.prefetch)

    def init_transformer_rand(self) -> None:
        """Caffe's layer has a DataTransformer whose InitRand draws a seed (twice); its generator serves
        nothing here (load_batch draws from prefetch_rng_), but the draws keep the global one in step."""
        if self._transformer_draws:
            caffe_rng_seed()

    # ----- the window file -----
    def _read_window_file(self, source: str, root: str, fg_threshold: np.float32, bg_threshold: np.float32):
        try:
            with open(source, encoding="utf-8", errors="surrogateescape") as handle:
                tokens = handle.read().split()
        except OSError as err:
            raise ValueError(f"{self.label}: cannot read window file '{source}': {err.strerror}") from None
        if not tokens:
            raise ValueError(f"{self.label}: window file '{source}' is empty")
        images: List[Tuple[str, Tuple[int, int, int]]] = []
        fg: List[Window] = []
        bg: List[Window] = []
        at = 0

        def take(count: int, what: str) -> List[str]:
            nonlocal at
            if at + count > len(tokens):
                raise ValueError(f"{self.label}: window file '{source}' ends inside image {len(images)} "
                                 f"(expected {what})")
            at += count
            return tokens[at - count:at]

        while at < len(tokens):
            hashtag, index = take(2, "'# <image index>'")
            if hashtag != "#" or index != str(len(images)):
                raise ValueError(f"{self.label}: window file '{source}': expected '# {len(images)}', got "
                                 f"'{hashtag} {index}' (images are numbered 0, 1, ... in order)")
            path = os.path.abspath(root + take(1, "an image path")[0])  # the cwd may change while loading ahead
            try:
                size = tuple(int(v) for v in take(3, "channels height width"))
                count = int(take(1, "the number of windows")[0])
                for _ in range(count):
                    label, overlap, x1, y1, x2, y2 = take(6, "'class overlap x1 y1 x2 y2'")
                    window = (len(images), int(label), float(f32(overlap)), int(x1), int(y1), int(x2), int(y2))
                    if f32(overlap) >= fg_threshold:
                        if window[1] <= 0:
                            raise ValueError(f"foreground window {window[3:]} has class {window[1]}; "
                                             f"foreground classes must be positive")
                        fg.append(window)
                    elif f32(overlap) < bg_threshold:
                        bg.append((window[0], 0, 0.0) + window[3:])
            except ValueError as err:
                raise ValueError(f"{self.label}: window file '{source}', image {len(images)} ('{path}'): "
                                 f"{err}") from None
            images.append((path, size))
        return images, fg, bg, images[-1][1][0]

    def _file_bytes(self, path: str) -> bytes:
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as err:
            raise ValueError(f"{self.label}: cannot read image '{path}': {err.strerror}") from None

    def _image(self, index: int) -> np.ndarray:
        path = self.images[index][0]
        if self.cache is None:
            return read_image(path, is_color=True)
        try:
            return decode_image(self.cache[index], "color")
        except ValueError as err:
            raise ValueError(f"{self.label}: image '{path}': {err}") from None

    # ----- batches -----
    def load_batch(self) -> List[np.ndarray]:
        if not self.fg_windows or not self.bg_windows:
            raise ValueError(f"{self.label}: window file '{self.source}' has {len(self.fg_windows)} foreground and "
                             f"{len(self.bg_windows)} background windows; WindowData needs both")
        data = np.zeros(self.shapes[0], dtype=np.float32)
        labels = np.empty(self.batch_size, dtype=np.float32)
        num_fg = int(f32(self.batch_size) * self.fg_fraction)
        item = 0
        for windows, count in ((self.bg_windows, self.batch_size - num_fg), (self.fg_windows, num_fg)):
            for _ in range(count):
                window = windows[self._rng() % len(windows)]
                do_mirror = self.mirror and self._rng() % 2 == 1
                self._warp_into(data[item], window, do_mirror)
                labels[item] = window[1]
                item += 1
        return [data, labels]

    def _warp_into(self, out: np.ndarray, window: Window, do_mirror: bool) -> None:
        """One window as Caffe's load_batch cuts, pads, warps, mirrors and normalises it into ``out``."""
        image = self._image(window[0])
        rows, cols = image.shape[:2]
        x1, y1, x2, y2 = window[3:]
        crop = self.crop_size
        crop_w = crop_h = crop
        pad_w = pad_h = 0
        if self.context_pad > 0 or self.square:
            context_scale = f32(crop) / f32(crop - 2 * self.context_pad)
            half_height, half_width = f32((y2 - y1 + 1) / 2.0), f32((x2 - x1 + 1) / 2.0)
            center_x, center_y = f32(x1) + half_width, f32(y1) + half_height
            if self.square:
                half_height = half_width = max(half_height, half_width)
            x1 = _round(center_x - half_width * context_scale)
            x2 = _round(center_x + half_width * context_scale)
            y1 = _round(center_y - half_height * context_scale)
            y2 = _round(center_y + half_height * context_scale)
            unclipped_height, unclipped_width = y2 - y1 + 1, x2 - x1 + 1
            pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
            pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
            scale_x, scale_y = f32(crop) / f32(unclipped_width), f32(crop) / f32(unclipped_height)
            crop_w = _round(f32(x2 - x1 + 1) * scale_x)
            crop_h = _round(f32(y2 - y1 + 1) * scale_y)
            pad_x1, pad_x2 = _round(f32(pad_x1) * scale_x), _round(f32(pad_x2) * scale_x)
            pad_h = _round(f32(pad_y1) * scale_y)
            pad_w = pad_x2 if do_mirror else pad_x1  # the padding is mirrored with the window
            crop_h = min(crop_h, crop - pad_h)
            crop_w = min(crop_w, crop - pad_w)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows) or crop_w <= 0 or crop_h <= 0:
            raise ValueError(f"{self.label}: window {window[3:]} of image '{self.images[window[0]][0]}' "
                             f"({cols}x{rows}) lies outside the image")
        cv2 = cv2_module()
        warped = cv2.resize(image[y1:y2 + 1, x1:x2 + 1], (crop_w, crop_h), interpolation=cv2.INTER_LINEAR)
        if warped.ndim == 2:
            warped = warped[:, :, np.newaxis]
        if do_mirror:
            warped = warped[:, ::-1]
        pixels = warped.transpose(2, 0, 1).astype(np.float32)
        if self.mean is not None:
            off = (self.mean.shape[2] - crop) // 2  # Caffe centres by the mean's width on both axes
            pixels -= self.mean[:, off + pad_h:off + pad_h + crop_h, off + pad_w:off + pad_w + crop_w]
        elif len(self.mean_values):
            pixels -= self.mean_values.reshape(-1, 1, 1)
        pixels *= self.scale
        out[:, pad_h:pad_h + crop_h, pad_w:pad_w + crop_w] = pixels
