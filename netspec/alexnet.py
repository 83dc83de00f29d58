"""AlexNet (CaffeNet) as an FCN body, and FCN-AlexNet, the paper's Table 1 baseline.

Names, fields and order are those of the FCN release's voc-fcn-alexnet net, so that surgery can
transplant the ILSVRC CaffeNet weights by name (fc6/fc7 become 6x6 and 1x1 convolutions).
That net writes no lr multipliers on the body (Caffe's default 1 for weights and biases) and
spells ``group`` out on every convolution; both survive here because a parsed prototxt
tells a field set to its default from a field left out.
"""
from __future__ import annotations

from typing import Optional

from netspec.backbones import conv_relu, fcn_head, lrn, max_pool, softmax_loss
from netspec.net_spec import L, NetSpec, Top

__all__ = ["ALEXNET_FC_WIDTH", "ALEXNET_WIDTHS", "alexnet", "fcn_alexnet"]

ALEXNET_WIDTHS = (96, 256, 384, 384, 256)
ALEXNET_FC_WIDTH = 4096
ALEXNET_STRIDE = 32  # conv1's 4, then three 2-stride poolings
# The 32x upsampling's kernel: 63 rather than 64, so that the crop offset (18) is whole.
ALEXNET_UPSCORE_KERNEL = 63


def _conv(bottom: Top, nout: int, ks: int, stride: int = 1, pad: int = 0,
          group: int = 1) -> tuple[Top, Top]:
    """An AlexNet convolution + ReLU: default multipliers, ``group`` always written."""
    return conv_relu(bottom, nout, ks=ks, stride=stride, pad=pad, param=None, group=group)


def alexnet(n: NetSpec, data: Top, dropout: bool = True) -> Top:
    """conv1 … pool5, then fc6 (6x6) and fc7 (1x1) as convolutions; returns fc7's output.

    conv1 pads by 100 (any input size reaches fc6); conv2, conv4 and conv5 are split in two
    groups as in the original two-GPU net. ``dropout`` adds drop6/drop7 (ratio 0.5).
    """
    w1, w2, w3, w4, w5 = ALEXNET_WIDTHS
    n.conv1, n.relu1 = _conv(data, w1, 11, stride=4, pad=100)
    n.pool1 = max_pool(n.relu1, 3)
    n.norm1 = lrn(n.pool1)
    n.conv2, n.relu2 = _conv(n.norm1, w2, 5, pad=2, group=2)
    n.pool2 = max_pool(n.relu2, 3)
    n.norm2 = lrn(n.pool2)
    n.conv3, n.relu3 = _conv(n.norm2, w3, 3, pad=1)
    n.conv4, n.relu4 = _conv(n.relu3, w4, 3, pad=1, group=2)
    n.conv5, n.relu5 = _conv(n.relu4, w5, 3, pad=1, group=2)
    n.pool5 = top = max_pool(n.relu5, 3)
    for layer, ks in ((6, 6), (7, 1)):
        fc, top = _conv(top, ALEXNET_FC_WIDTH, ks)
        n[f"fc{layer}"], n[f"relu{layer}"] = fc, top
        if dropout:
            n[f"drop{layer}"] = top = L.Dropout(top, dropout_ratio=0.5, in_place=True)
    return top


def fcn_alexnet(n: NetSpec, data: Top, label: Optional[Top] = None, num_classes: int = 21,
                dropout: bool = True) -> Top:
    """FCN-AlexNet: fc7 scores upsampled 32x at once; the loss is averaged over pixels.

    The release trains this net with a normalised loss, gradient accumulation and momentum
    0.9 (its solver), unlike the VGG nets' summed loss and momentum 0.99. Returns ``score``.
    """
    features = alexnet(n, data, dropout)
    score = fcn_head(n, features, data, num_classes, stride=ALEXNET_STRIDE,
                     final_kernel=ALEXNET_UPSCORE_KERNEL)
    if label is not None:
        n.loss = softmax_loss(score, label, normalize=True)
    return score
