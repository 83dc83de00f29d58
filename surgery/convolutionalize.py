"""Turn an ImageNet classifier into the weights an FCN starts from (models/ilsvrc-nets/*-fcn.caffemodel).

Section 3.1 of the paper: a classifier's fully connected layers are convolutions whose kernels cover
their whole input, so the same numbers, reshaped, run the classifier densely over any larger image.
Both nets are built by the runner, which already reads V1 prototxts and caffemodels (the VGG16
ILSVRC release) and gives every blob its layer's shape, so the rest is one ``transplant``.
"""
from __future__ import annotations

import logging
import os
from typing import Union

from netspec import caffe_pb2
from runner.net import Net
from surgery.transplant import TransplantReport, transplant

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def convolutionalize(classifier_prototxt: PathLike, classifier_caffemodel: PathLike,
                     fcn_body: Union[PathLike, "caffe_pb2.NetParameter"],
                     out_caffemodel: PathLike) -> TransplantReport:
    """Write ``out_caffemodel``: ``fcn_body`` (a prototxt path or NetParameter) holding the classifier's
    weights, fully connected layers coerced into convolutions. The write is atomic. Returns the
    transplant report; layers of the body the classifier does not have keep their fillers (logged)."""
    classifier = Net(os.fspath(classifier_prototxt), caffe_pb2.TEST, weights=os.fspath(classifier_caffemodel))
    body = fcn_body if isinstance(fcn_body, caffe_pb2.NetParameter) else os.fspath(fcn_body)
    fcn = Net(body, caffe_pb2.TEST)
    report = transplant(fcn, classifier, echo=False)
    if report.untouched:
        logger.warning("convolutionalize: %s keep their fillers (not in the classifier)", ", ".join(report.untouched))
    fcn.save(os.fspath(out_caffemodel))
    return report
