"""The "null background" head (the FCN paper, Section 6.1), written with layers real Caffe has.

Instead of scoring the background as one more softmax class, the net scores only the foreground
classes, each trained as its own sigmoid cross-entropy (``label == c`` against everything else); the
background's score is the constant 0, and a pixel takes the class of highest score, so it is background
exactly where no foreground score is positive. In Caffe's layers:

- ``fcn_head`` with ``num_classes - 1`` outputs gives the cropped foreground scores ``score_fg``;
- ``targets`` (a ``data_layers.targets.ForegroundTargets`` Python layer) turns the labels into one binary
  map per foreground class, void pixels ignored;
- ``loss``: SigmoidCrossEntropyLoss of ``score_fg`` against ``targets``, summed as FCN's softmax loss is;
- ``score_bg``: a frozen, zero, bias-free 1x1 convolution of ``score_fg``: zeros shaped like one score map;
- ``score``: ``score_bg`` and ``score_fg`` concatenated, background first, so that the argmax every scorer
  and ``fcn infer`` take is the null-background prediction, ties going to the background.
"""
from __future__ import annotations

from typing import Optional, Sequence

from netspec.backbones import VGG16_STRIDE, fcn_head
from netspec.net_spec import L, NetSpec, Top

VOID = 255
# A layer whose weights neither learn nor decay: they stay at their filler's value, 0.
ZERO = [dict(lr_mult=0, decay_mult=0)]


def null_background_head(n: NetSpec, features: Top, data: Top, num_classes: int, label: Optional[Top] = None,
                         skips: Sequence[str] = (), stride: int = VGG16_STRIDE) -> Top:
    """FCN's decoder (``skips`` and ``stride`` as ``fcn_head``) with the background's score fixed at 0;
    ``num_classes`` counts the background. With a ``label``, adds ``targets`` and ``loss``. Returns the
    ``num_classes``-channel ``score``."""
    score_fg = fcn_head(n, features, data, num_classes - 1, skips=skips, stride=stride, suffix="_fg",
                        skip_suffix="")
    if label is not None:
        n.targets = L.Python(label, module="data_layers.targets", layer="ForegroundTargets",
                             param_str=repr({"classes": num_classes, "ignore_label": VOID}))
        n.loss = L.SigmoidCrossEntropyLoss(score_fg, n.targets,
                                           loss_param=dict(ignore_label=VOID, normalize=False))
    n.score_bg = L.Convolution(score_fg, num_output=1, kernel_size=1, bias_term=False,
                               weight_filler=dict(type="constant", value=0), param=ZERO)
    n.score = L.Concat(n.score_bg, score_fg, axis=1)
    return n.score
