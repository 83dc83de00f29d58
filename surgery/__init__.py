"""Net surgery: moving weights between nets so an FCN can start from a classifier (the release's
``surgery.py``): ``transplant`` by layer name with fc-to-conv coercion, ``convolutionalize`` a whole
classifier, bilinear ``interp`` kernels for upsampling layers, and ``expand_score`` to more classes."""
from surgery.convolutionalize import convolutionalize
from surgery.expand import expand_score
from surgery.interp import interp, upsample_filt
from surgery.transplant import ParamMove, TransplantReport, transplant

__all__ = ["ParamMove", "TransplantReport", "convolutionalize", "expand_score", "interp", "transplant",
           "upsample_filt"]
