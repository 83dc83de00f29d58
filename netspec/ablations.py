"""The paper's ablations of FCN-VGG16 on PASCAL VOC: a fixed body, and truncated bodies.

FCN-32s-fixed learns only its classifier (CVPR Table 2 / PAMI Table 3: fine-tuning all
layers matters). FCN-pool5/pool4/pool3 score a VGG16 truncated after that pooling and
upsample its stride in one step, without skips (PAMI Table 3: finer layers alone are not
enough, the skips are what help). Names follow the FCN nets so weights transfer by name.
"""
from __future__ import annotations

from typing import Optional

from netspec.backbones import FIXED, VGG16_DEPTHS, fcn_head, vgg16, vgg16_convs
from netspec.net_spec import NetSpec, Top

__all__ = ["fcn32s_fixed", "fcn_pool"]


def fcn32s_fixed(n: NetSpec, data: Top, label: Optional[Top] = None, num_classes: int = 21,
                 dropout: bool = True) -> Top:
    """FCN-32s whose body (conv1_1 … fc7) keeps its ImageNet weights: only score_fr learns."""
    features = vgg16(n, data, dropout=dropout, param=FIXED)
    return fcn_head(n, features, data, num_classes, label=label)


def fcn_pool(n: NetSpec, data: Top, label: Optional[Top] = None, num_classes: int = 21, *,
             pool: int) -> Top:
    """FCN-pool<pool>: score VGG16's pool<pool> and upsample 2^pool x at once.

    pool5 drops fc6/fc7 from FCN-32s; pool4 and pool3 also drop the later stages, leaving
    the output strides of FCN-16s and FCN-8s without their skips. Returns ``score``.
    """
    if not 3 <= pool <= len(VGG16_DEPTHS):
        raise ValueError(f"FCN-poolX ablations score pool3, pool4 or pool5, not pool{pool}")
    features = vgg16_convs(n, data, stages=pool)
    return fcn_head(n, features, data, num_classes, label=label, stride=2 ** pool)
