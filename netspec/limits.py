"""Resource limits checked before anything is allocated, each with an environment variable to raise it.

A file's few bytes can ask for gigabytes: a gzip bomb, a prototxt of a million layers, a picture header
declaring 169 megapixels, a blob shape of 6 GB. Without a check the process dies of MemoryError (or
the kernel's OOM killer) far from the cause. Each limit here is far above any real Caffe asset and is
checked where the size is first known; the error names the file or layer, the size, the limit and the
variable that raises it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

GiB = 1 << 30


@dataclass(frozen=True)
class Limit:
    """One limit: its default and the environment variable that overrides it (an integer)."""
    variable: str
    default: int
    unit: str

    @property
    def value(self) -> int:
        given = os.environ.get(self.variable)
        if given is None:
            return self.default
        try:
            return int(given)
        except ValueError:
            raise ValueError(f"{self.variable}={given!r}: expected an integer number of {self.unit}") from None

    def check(self, amount: int, what: str) -> None:
        """Raise ResourceLimitError when ``amount`` exceeds the limit; ``what`` names the file or layer."""
        limit = self.value
        if amount > limit:
            raise ResourceLimitError(f"{what}: {amount:,} {self.unit}, more than the limit of {limit:,} "
                                     f"(set {self.variable} to raise it)")


class ResourceLimitError(ValueError):
    """Input that would need more memory or time than a limit allows; raised before allocating."""


#: A caffemodel's gunzipped size: Caffe's own reader stops at 2 GiB (protobuf's message limit).
DECOMPRESSED_BYTES = Limit("FCN_CAFFE_MAX_DECOMPRESSED_BYTES", 2 * GiB, "bytes")
#: Layers in one net: ResNet-152 has about 500, the largest zoo nets a few thousand.
NET_LAYERS = Limit("FCN_CAFFE_MAX_LAYERS", 100_000, "layers")
#: Layers ``fcn draw`` puts on one canvas, whose memory grows with their number: the largest zoo nets
#: (ResNet-152 with its BatchNorm and Scale layers) have under a thousand.
DRAW_LAYERS = Limit("FCN_CAFFE_MAX_DRAW_LAYERS", 3_000, "layers")
#: Pixels of one decoded picture: real datasets hold at most a few megapixels (an 8000x8000 aerial tile is 64).
IMAGE_PIXELS = Limit("FCN_CAFFE_MAX_IMAGE_PIXELS", 100_000_000, "pixels")
#: A net's parameters, allocated when it is built: VGG16 holds 0.55 GB.
PARAM_BYTES = Limit("FCN_CAFFE_MAX_PARAM_BYTES", 16 * GiB, "bytes")
