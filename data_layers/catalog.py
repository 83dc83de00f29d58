"""The data layer for each dataset kind, and a way to stand one up outside a net.

``open_layer`` builds a layer the way Caffe's Python-layer host does (param_str, then setup with real
Blobs), for benchmarks, tests and scripts that want samples without a prototxt.
"""
from typing import Any, Dict, List, Tuple, Type

from data_layers.base import SegDataLayer
from data_layers.nyud import NYUDSegDataLayer
from data_layers.pascalcontext import PASCALContextSegDataLayer
from data_layers.siftflow import SIFTFlowSegDataLayer
from data_layers.voc import SBDDSegDataLayer, VOCSegDataLayer
from runner.blob import Blob

LAYERS: Dict[str, Type[SegDataLayer]] = {
    "voc": VOCSegDataLayer,
    "sbd": SBDDSegDataLayer,
    "nyud": NYUDSegDataLayer,
    "siftflow": SIFTFlowSegDataLayer,
    "context": PASCALContextSegDataLayer,
}


def open_layer(kind: str, params: Dict[str, Any]) -> Tuple[SegDataLayer, List[Blob]]:
    """A set-up layer of ``kind`` with ``params`` as its param_str, and its top Blobs (one per top)."""
    if kind not in LAYERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(LAYERS)}")
    layer = LAYERS[kind]()
    layer.param_str = repr(params)
    tops = [Blob() for _ in params.get("tops", layer.tops)]
    layer.setup([], tops)
    return layer, tops
