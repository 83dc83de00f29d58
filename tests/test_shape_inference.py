"""Layers that size their tops by rule (Layer.top_shapes) agree with running them on meta tensors.

Building a net asks the common layers (convolutions, pooling, Eltwise, Split, neurons) for their top
shapes by rule, because torch's meta kernels for some of them import torch._dynamo and sympy on first
use, over a second of a fresh process. The rule must give what the layer's forward gives, and refuse
what it refuses; this checks both on every deploy net of the model zoo and on edge-case layers.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from netspec import caffe_pb2
from netspec.prototxt import parse_prototxt
from runner.graph import meta_top_shapes
from runner.net import Net

REPO = Path(__file__).resolve().parents[1]
DEPLOYS = sorted(REPO.glob("models/*/deploy.prototxt"))


def _ruled_slots(net: Net):
    graph = net.graph
    for slot in graph.slots:
        if slot.impl is None:
            continue
        bottoms = [graph.blobs[b].shape for b in slot.bottoms]
        ruled = slot.impl.top_shapes(bottoms, [tuple(p.shape) for p in slot.params])
        if ruled is not None:
            yield slot, bottoms, ruled


@pytest.mark.parametrize("deploy", DEPLOYS, ids=lambda p: p.parent.name)
def test_rules_match_meta_shapes_on_the_model_zoo(deploy: Path) -> None:
    net = Net(str(deploy), caffe_pb2.TEST)
    checked = 0
    for slot, bottoms, ruled in _ruled_slots(net):
        assert ruled == meta_top_shapes(slot, bottoms), slot.name
        checked += 1
    assert checked >= 10


EDGE_CASES = """
name: "edges"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 17 dim: 13 } } }
layer { name: "pool_mask" type: "Pooling" bottom: "x" top: "p" top: "mask"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool_floor" type: "Pooling" bottom: "x" top: "pf"
        pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 round_mode: FLOOR } }
layer { name: "pool_global" type: "Pooling" bottom: "x" top: "pg" pooling_param { pool: AVE global_pooling: true } }
layer { name: "conv_dilated" type: "Convolution" bottom: "x" top: "cd"
        convolution_param { num_output: 6 kernel_size: 3 dilation: 2 pad: 1 stride: 2 group: 3 } }
layer { name: "conv_two" type: "Convolution" bottom: "x" bottom: "x" top: "c1" top: "c2"
        convolution_param { num_output: 4 kernel_h: 3 kernel_w: 1 } }
layer { name: "deconv" type: "Deconvolution" bottom: "x" top: "dc"
        convolution_param { num_output: 5 kernel_size: 4 stride: 3 pad: 1 bias_term: false } }
layer { name: "split" type: "Split" bottom: "x" top: "s1" top: "s2" top: "s3" }
layer { name: "sum" type: "Eltwise" bottom: "s1" bottom: "s2" top: "e" eltwise_param { coeff: 1 coeff: -1 } }
layer { name: "relu" type: "ReLU" bottom: "e" top: "e" }
layer { name: "drop" type: "Dropout" bottom: "s3" top: "d" }
layer { name: "fc" type: "InnerProduct" bottom: "d" top: "fc" inner_product_param { num_output: 7 } }
layer { name: "fc_axis" type: "InnerProduct" bottom: "x" top: "fa" inner_product_param { num_output: 4 axis: 2 transpose: true } }
"""


def test_rules_match_meta_shapes_on_edge_cases() -> None:
    net = Net(parse_prototxt(textwrap.dedent(EDGE_CASES)), caffe_pb2.TEST)
    names = set()
    for slot, bottoms, ruled in _ruled_slots(net):
        assert ruled == meta_top_shapes(slot, bottoms), slot.name
        names.add(slot.name)
    assert names >= {"pool_mask", "pool_floor", "pool_global", "conv_dilated", "conv_two", "deconv", "split",
                     "sum", "relu", "drop", "fc", "fc_axis"}


@pytest.mark.parametrize("layer, message", [
    ('layer { name: "c" type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 9 } }',
     "too small for kernel"),
    ('layer { name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param { pool: MAX kernel_size: 2 } }'
     'layer { name: "q" type: "Pooling" bottom: "y" top: "z" pooling_param { pool: MAX kernel_size: 2 } }'
     'layer { name: "r" type: "Pooling" bottom: "z" top: "w" pooling_param { pool: MAX kernel_size: 2 } }'
     'layer { name: "s" type: "Pooling" bottom: "w" top: "v" pooling_param { pool: MAX kernel_size: 3 } }',
     "too small for kernel"),
    ('layer { name: "t" type: "Input" top: "u" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 5 } } }'
     'layer { name: "e" type: "Eltwise" bottom: "x" bottom: "u" top: "y" }', "differ; all must be equal"),
])
def test_rules_refuse_what_the_layers_refuse(layer: str, message: str) -> None:
    text = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }' + layer
    with pytest.raises(ValueError, match=message):
        Net(parse_prototxt(text), caffe_pb2.TEST)
