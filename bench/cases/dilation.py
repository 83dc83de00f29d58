"""Case 8: the paper's Section 3.2, shift-and-stitch against its "a trous" rewrite, on the same dense output.

A net of unpadded 3x3 convolutions, one 2x2 pooling and two strided convolutions (output stride 8) scores
an image.
``surgery.shift_stitch`` gets the dense (stride 1) output by running it on the 8 x 8 = 64 shifted copies of
the image and interlacing them; ``surgery.dilation.remove_subsampling`` cut at pool1 gives a net with the
same weights whose one forward is that dense output. Unpadded layers make the two equal everywhere they
overlap, which is checked before they are timed.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
import torch

from bench.measure import interleaved
from bench.nets import multiply_adds, random_image, randomize
from bench.sizes import Sizes
from netspec import caffe_pb2
from netspec.net_spec import L, NetSpec, P
from runner.net import Net
from surgery.dilation import remove_subsampling
from surgery.shift_stitch import shift_and_stitch

CUT = "pool1"
STRIDE = 8  # pool1 and the two stride-2 convolutions: the rewrite from pool1 on removes all three


def strided_net(side: int, widths: Sequence[int], classes: int) -> caffe_pb2.NetParameter:
    """Unpadded 3x3 convolutions with ReLUs; a 2x2 max pooling after the first, stride 2 in the others (a
    pooling after the cut would need a dilated window, which Caffe's PoolingParameter cannot express);
    then a 1x1 scorer."""
    n = NetSpec()
    top = n.data = L.Input(shape=dict(dim=[1, 3, side, side]))
    for stage, width in enumerate(widths, 1):
        n[f"conv{stage}"] = top = L.Convolution(top, num_output=width, kernel_size=3, stride=1 if stage == 1 else 2)
        n[f"relu{stage}"] = top = L.ReLU(top, in_place=True)
        if stage == 1:
            n.pool1 = top = L.Pooling(top, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.score = L.Convolution(top, num_output=classes, kernel_size=1)
    return n.to_proto()


def run(sizes: Sizes, scratch: str) -> Dict[str, Any]:
    param = strided_net(sizes.dilation_image, sizes.dilation_widths, sizes.classes)
    strided = Net(param, caffe_pb2.TEST)
    randomize(strided)
    dense = Net(remove_subsampling(param, CUT), caffe_pb2.TEST)
    dense.share_with(strided)
    # the shifted copies are up to STRIDE - 1 pixels smaller: the full-size forward bounds each from above
    gmac = {"shift_and_stitch": STRIDE ** 2 * multiply_adds(strided) / 1e9, "dilated": multiply_adds(dense) / 1e9}
    image = random_image((1, 3, sizes.dilation_image, sizes.dilation_image)).numpy()
    dense.blobs["data"].data[...] = image

    def stitched() -> np.ndarray:
        return shift_and_stitch(strided, image, STRIDE)

    def dilated() -> np.ndarray:
        dense.forward()
        return dense.blobs["score"].data

    with torch.no_grad():
        a, b = stitched(), dilated()
        rows, cols = min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3])
        error = float(np.abs(a[..., :rows, :cols] - b[..., :rows, :cols]).max() / np.abs(b).max())
        if error > 1e-5:
            raise AssertionError(f"shift-and-stitch and the dilated net differ by {error:.1e} (relative)")
        timings = interleaved({"shift_and_stitch": stitched, "dilated": dilated}, sizes.dilation_reps, warmup=0)
    return {
        "image": [sizes.dilation_image, sizes.dilation_image],
        "stride": STRIDE,
        "dense_output": [rows, cols],
        "relative_error": error,
        "gmac": gmac,
        "timings": {name: t.as_dict() for name, t in timings.items()},
        "dilated_speedup": timings["shift_and_stitch"].median / timings["dilated"].median,
    }
