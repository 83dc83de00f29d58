"""Bad input gives one clean line, never a traceback through our internals, a crash or a hang.

A user who points the Net at a broken prototxt, the wrong caffemodel or a net we cannot run should
read one line that names the culprit (file and position, layer, blob, shapes) and get an exception
a caller can catch as ValueError (or FileNotFoundError for a path that is not there). The targeted
tests pin the message for each common mistake; the fuzz test throws a few hundred seeded mutants of
real-Caffe fixtures at parse, construction and forward and accepts only those clean outcomes (and
MemoryError, for a blob Caffe would allow but the worker cannot hold).
"""
from __future__ import annotations

import gzip
import json
import math
import os
import random
import re
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor

from netspec import caffe_pb2
from netspec.net_spec import param_name_dict
from netspec.prototxt import parse_prototxt
from runner.net import Net

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "caffe_reference"
CLEAN = (ValueError, FileNotFoundError)
PARAM_PREFIXES = param_name_dict()

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
CONV = ('layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        'convolution_param {{ num_output: {n} kernel_size: 3 }} }}\n')


def _build(text: str, folder: Optional[Path] = None, weights: Optional[Path] = None):
    """A Net from prototxt text, written to a file when the test needs relative imports or paths."""
    if folder is None:
        return Net(parse_prototxt(text), caffe_pb2.TEST, weights=None if weights is None else str(weights))
    path = folder / "net.prototxt"
    path.write_text(text)
    return Net(str(path), caffe_pb2.TEST, weights=None if weights is None else str(weights))


def _clean_error(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    """The one-line message of a clean error; each needle must appear in it."""
    message = str(excinfo.value)
    assert isinstance(excinfo.value, CLEAN), f"{type(excinfo.value).__name__}: {message}"
    assert "\n" not in message, f"multi-line message: {message!r}"
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


# ----- prototxt -----

def test_malformed_prototxt_names_file_line_and_column(tmp_path):
    text = INPUT + 'layer {\n  name: "conv"\n  type: "Convolution"\n  kernel_size: 3\n}\n'
    with pytest.raises(Exception) as excinfo:
        _build(text, tmp_path)
    _clean_error(excinfo, f"{tmp_path / 'net.prototxt'}:5:3:", "kernel_size")


def test_unterminated_prototxt_names_file_and_position(tmp_path):
    with pytest.raises(Exception) as excinfo:
        _build(INPUT + 'layer { name: "conv" type: "Convolution"', tmp_path)
    assert re.search(re.escape(str(tmp_path / "net.prototxt")) + r":\d+:\d+:", _clean_error(excinfo))


def test_binary_file_as_prototxt_is_rejected(tmp_path):
    path = tmp_path / "weights.caffemodel"
    path.write_bytes(gzip.decompress((FIXTURES / "fcn" / "tiny_fcn8s" / "net.caffemodel.gz").read_bytes()))
    with pytest.raises(Exception) as excinfo:
        Net(str(path), caffe_pb2.TEST)
    _clean_error(excinfo, str(path))


def test_missing_prototxt_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError) as excinfo:
        Net(str(tmp_path / "absent.prototxt"), caffe_pb2.TEST)
    _clean_error(excinfo, "absent.prototxt")


# ----- caffemodel -----

def _good_caffemodel(tmp_path: Path) -> Path:
    path = tmp_path / "good.caffemodel"
    _build(INPUT + CONV.format(n=2)).save(str(path))
    return path


def _truncated(tmp_path: Path) -> Path:
    raw = _good_caffemodel(tmp_path).read_bytes()
    path = tmp_path / "truncated.caffemodel"
    path.write_bytes(raw[: len(raw) * 2 // 3])
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"")
    return path


def _png(tmp_path: Path) -> Path:
    path = tmp_path / "image.caffemodel"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    return path


def _prototxt_as_weights(tmp_path: Path) -> Path:
    path = tmp_path / "deploy.caffemodel"
    path.write_text(INPUT + CONV.format(n=2))
    return path


def _corrupt_gzip(tmp_path: Path) -> Path:
    path = tmp_path / "weights.caffemodel.gz"
    path.write_bytes(gzip.compress(_good_caffemodel(tmp_path).read_bytes())[:-12])
    return path


def _absent(tmp_path: Path) -> Path:
    return tmp_path / "absent.caffemodel"


BAD_WEIGHTS = [_truncated, _empty, _png, _prototxt_as_weights, _corrupt_gzip, _absent]


@pytest.mark.parametrize("make", BAD_WEIGHTS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("how", ["weights", "copy_from"])
def test_bad_caffemodel_names_the_file(tmp_path, make, how):
    bad = make(tmp_path)
    with pytest.raises(Exception) as excinfo:
        if how == "weights":
            _build(INPUT + CONV.format(n=2), weights=bad)
        else:
            _build(INPUT + CONV.format(n=2)).copy_from(str(bad))
    _clean_error(excinfo, str(bad))
    if make is _absent:
        assert isinstance(excinfo.value, FileNotFoundError)


def test_copy_from_shape_mismatch_names_layer_index_and_both_shapes(tmp_path):
    good = _good_caffemodel(tmp_path)
    net = _build(INPUT + CONV.format(n=4))
    with pytest.raises(Exception) as excinfo:
        net.copy_from(str(good))
    _clean_error(excinfo, str(good), "'conv'", "param 0", "(2, 3, 3, 3)", "(4, 3, 3, 3)")


def test_copy_from_blob_count_mismatch_names_layer(tmp_path):
    good = _good_caffemodel(tmp_path)
    no_bias = INPUT + CONV.format(n=2).replace("kernel_size: 3", "kernel_size: 3 bias_term: false")
    with pytest.raises(Exception) as excinfo:
        _build(no_bias, weights=good)
    _clean_error(excinfo, str(good), "'conv'", "2", "1")


# ----- net structure -----

def test_missing_bottom_names_layer_and_blob():
    text = INPUT + CONV.format(n=2).replace('bottom: "data"', 'bottom: "image"')
    with pytest.raises(Exception) as excinfo:
        _build(text)
    _clean_error(excinfo, "'conv'", "'image'")


def test_unsupported_layer_type_lists_supported_types():
    text = INPUT + 'layer { name: "warp" type: "SpatialTransformer" bottom: "data" top: "warp" }\n'
    with pytest.raises(Exception) as excinfo:
        _build(text)
    _clean_error(excinfo, "'warp'", "'SpatialTransformer'", "Convolution", "Deconvolution", "Crop")


TWO_INPUTS = INPUT + INPUT.replace('"data"', '"other"')
WRONG_BOTTOM_COUNTS = {
    "relu_two": (TWO_INPUTS, 'layer { name: "bad" type: "ReLU" bottom: "data" bottom: "other" top: "bad" }'),
    "crop_one": (INPUT, 'layer { name: "bad" type: "Crop" bottom: "data" top: "bad" }'),
    "eltwise_one": (INPUT, 'layer { name: "bad" type: "Eltwise" bottom: "data" top: "bad" }'),
    "loss_one": (INPUT, 'layer { name: "bad" type: "SoftmaxWithLoss" bottom: "data" top: "bad" }'),
    "pooling_none": (INPUT, 'layer { name: "bad" type: "Pooling" top: "bad" pooling_param { kernel_size: 2 } }'),
}


@pytest.mark.parametrize("case", sorted(WRONG_BOTTOM_COUNTS))
def test_wrong_number_of_bottoms_names_layer(case):
    head, layer = WRONG_BOTTOM_COUNTS[case]
    with pytest.raises(Exception) as excinfo:
        _build(head + layer + "\n")
    _clean_error(excinfo, "'bad'")


def test_wrong_number_of_tops_names_layer():
    text = INPUT + 'layer { name: "bad" type: "ReLU" bottom: "data" top: "a" top: "b" }\n'
    with pytest.raises(Exception) as excinfo:
        _build(text)
    _clean_error(excinfo, "'bad'")


def test_layer_type_with_a_newline_still_gives_one_line():
    text = INPUT + 'layer { name: "odd" type: "Conv\\nolution" bottom: "data" top: "odd" }\n'
    with pytest.raises(Exception) as excinfo:
        _build(text)
    _clean_error(excinfo, "'odd'")


@pytest.mark.parametrize("how", ["prototxt", "weights"])
def test_folder_instead_of_a_file_names_the_folder(tmp_path, how):
    with pytest.raises(Exception) as excinfo:
        if how == "prototxt":
            Net(str(tmp_path), caffe_pb2.TEST)
        else:
            _build(INPUT + CONV.format(n=2)).copy_from(str(tmp_path))
    _clean_error(excinfo, str(tmp_path))


def test_blob_over_caffes_size_limit_names_the_layer():
    # 2^64 elements: torch refuses before allocating anything, so this is safe on any machine.
    text = 'layer { name: "huge" type: "Input" top: "data" input_param { shape { dim: 4294967296 dim: 4294967296 } } }'
    with pytest.raises(Exception) as excinfo:
        _build(text)
    _clean_error(excinfo, "'huge'")


LABELLED = INPUT + ('layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 1 dim: 1 dim: 8 '
                    'dim: 8 } } }\nlayer { name: "loss" type: "%s" bottom: "data" bottom: "label" top: "loss" }\n')


@pytest.mark.parametrize("loss", ["SoftmaxWithLoss", "Accuracy"])
def test_label_out_of_range_names_layer(loss):
    net = _build(LABELLED % loss)
    net.blobs["label"].data[...] = 7
    with pytest.raises(Exception) as excinfo:
        net.forward()
    _clean_error(excinfo, "'loss'", "7")


PYTHON_LAYER = ('layer {{ name: "py" type: "Python" bottom: "data" top: "py" '
                'python_param {{ module: "{module}" layer: "MyLayer" }} }}\n')
BROKEN_MODULES = {
    "absent": None,
    "missing_dependency": "import module_that_is_not_installed_anywhere\n",
    "syntax_error": "class MyLayer(:\n",
}
@pytest.mark.parametrize("case", sorted(BROKEN_MODULES))
def test_python_layer_module_that_cannot_be_imported(tmp_path, case):
    # Each case gets its own module name: a module imported once stays in sys.modules.
    module = f"fcn_bad_input_{case}"
    if BROKEN_MODULES[case] is not None:
        (tmp_path / f"{module}.py").write_text(BROKEN_MODULES[case])
    with pytest.raises(Exception) as excinfo:
        _build(INPUT + PYTHON_LAYER.format(module=module), tmp_path)
    _clean_error(excinfo, "'py'", module)


def test_python_layer_class_missing_names_module_and_class(tmp_path):
    (tmp_path / "fcn_bad_input_noclass.py").write_text("OtherLayer = object\n")
    with pytest.raises(Exception) as excinfo:
        _build(INPUT + PYTHON_LAYER.format(module="fcn_bad_input_noclass"), tmp_path)
    _clean_error(excinfo, "'py'", "fcn_bad_input_noclass", "MyLayer")


# ----- fuzz -----
#
# The parent process makes the mutants (pure Python, seeded) and hands them one at a time to a worker
# process that builds and runs them; a worker that overruns its per-case limit is killed (a hang) and
# one that dies is a crash. Both are restarted and the run goes on, so one bad case shows all others.

FUZZ_SEED = 20240611
FUZZ_TEXT_CASES = 300
FUZZ_BINARY_CASES = 100
CASE_LIMIT_S = 10.0
WORKER_MEMORY = 4 << 30  # a mutant asking for more fails fast instead of swapping the machine
# A mutant may ask for a blob that Caffe would allow but the worker cannot hold: MemoryError is the
# honest answer to that, so the fuzz counts it as clean too.
FUZZ_CLEAN = CLEAN + (MemoryError,)

TEXT_FIXTURES = ["layers/conv_k3_p1", "layers/pool_ave_k3_s2_p1", "layers/lrn_within_3",
                 "layers/crop_axis2_offsets_1_4", "layers/eltwise_sum_coeff",
                 "layers/deconv_k4_s2_group3_nobias", "layers/concat_axis1",
                 "layers/batchnorm_global_stats", "layers/reshape", "layers/scale_two_bottoms",
                 "fcn/tiny_fcn8s"]
BINARY_FIXTURES = ["layers/conv_k3_p1", "layers/deconv_k3_s2_p1_bias", "layers/innerproduct_4d",
                   "layers/batchnorm_global_stats", "layers/scale_axis1_bias"]

# Values a user (or a bit flip) might leave in a numeric field: signs, zero, type limits, junk.
BAD_NUMBERS = ["-1", "-3", "0", "7", "65", "2147483647", "-2147483648", "4294967295", "4294967296",
               "1000000", "1e30", "-1e30", "nan", "inf", "3.5"]
# The same for restructured fields, kept to what each integer type can hold (int64 is the default).
BAD_INTS = [-(1 << 31), -9, -1, 0, 1, 2, 3, 4, 7, 65, (1 << 31) - 1, (1 << 32) - 1, 10 ** 6, 1 << 40]
INT_RANGES = {FieldDescriptor.TYPE_INT32: (-(1 << 31), (1 << 31) - 1), FieldDescriptor.TYPE_UINT32: (0, (1 << 32) - 1),
              FieldDescriptor.TYPE_UINT64: (0, (1 << 64) - 1)}
# Fields inserted right after a random "{": each valid somewhere in caffe.proto, most not there.
BAD_FIELDS = ["kernel_size: -3", "kernel_size: 0", "stride: 0", "pad: 1000000", "pad: 4294967295",
              "num_output: 0", "group: 5", "group: 0", "dilation: 0", "axis: 7", "axis: -9",
              "offset: 99", "offset: 1 offset: 2 offset: 3 offset: 4", "slice_point: 100",
              "coeff: 1 coeff: 2 coeff: 3", "pool: BOGUS", "pool: STOCHASTIC", "norm_region: NOWHERE",
              "operation: DIVIDE", "operation: MAX", "local_size: 4", "local_size: 99", "dim: -1",
              "dim: 0", 'top: "data"', 'bottom: "loss"', 'bottom: "nowhere"', 'type: "Python"',
              "phase: TRAIN", "loss_weight: 2 loss_weight: 3", "engine: CUDNN", "bias_term: false",
              "global_pooling: true", "kernel_h: 0", "kernel_h: 2 kernel_w: 2", "num_axes: -2",
              'param { name: "shared" }', "shape { dim: 2 dim: -1 dim: -1 }", "ignore_label: 0",
              "use_global_stats: false", "moving_average_fraction: -1", "eps: 0", "k: -1", "beta: -9",
              "negative_slope: nan", "dropout_ratio: 1", "scale_train: false", "force_backward: true",
              "input_param { shape { dim: 0 } }", 'include { phase: TRAIN }', "state { phase: TRAIN }"]
SNIPPETS = ["{", "}", ":", '"', "layer {", "layer { }", "-", "0x", "\\", "\x00", "\xff", "#", "\n}\n",
            'name: "', "1 2 3", "layer { top: \"x\" }", "layer { name: \"x\" type: \"ReLU\" }"]
TYPE_NAMES = ["Convolution", "Deconvolution", "Pooling", "InnerProduct", "Crop", "Eltwise", "Concat",
              "Slice", "Reshape", "Flatten", "Softmax", "SoftmaxWithLoss", "LRN", "BatchNorm", "Scale",
              "Bias", "Python", "Split", "Silence", "ArgMax", "Accuracy", "Input", "DummyData", "Data",
              "LSTM", "Bogus", "", "convolution"]


@dataclass
class Mutant:
    """One fuzz case: where it came from, what was done to it, and the files to build it from."""
    index: int
    fixture: str
    mutation: str
    prototxt: Path
    weights: Optional[Path] = None


def _text_mutations(rng: random.Random) -> List[Tuple[str, Callable[[str], str]]]:
    """The text mutation operators, each drawing its own positions and values from ``rng``."""

    def insert(text: str) -> str:
        at = rng.randrange(len(text) + 1)
        return text[:at] + rng.choice(SNIPPETS) + text[at:]

    def flip(text: str) -> str:
        data = bytearray(text.encode("utf-8", "surrogateescape"))
        if not data:
            return insert(text)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return data.decode("utf-8", "surrogateescape")

    def truncate(text: str) -> str:
        return text[: rng.randrange(len(text))] if text else insert(text)

    def swap_tokens(text: str) -> str:
        spans = [m.span() for m in re.finditer(r'"[^"\n]*"|[\w.+-]+|[{}:]', text)]
        if len(spans) < 2:
            return insert(text)
        (a0, a1), (b0, b1) = sorted(rng.sample(spans, 2))
        return text[:a0] + text[b0:b1] + text[a1:b0] + text[a0:a1] + text[b1:]

    def drop_or_repeat_line(text: str) -> str:
        lines = text.splitlines(keepends=True)
        if not lines:
            return insert(text)
        i = rng.randrange(len(lines))
        lines[i:i + 1] = [] if rng.random() < 0.5 else [lines[i], lines[i]]
        return "".join(lines)

    def number(text: str) -> str:
        spans = [m.span(1) for m in re.finditer(r":\s*(-?[\d.]+(?:e-?\d+)?)\b", text)]
        if not spans:
            return insert(text)
        a, b = rng.choice(spans)
        return text[:a] + rng.choice(BAD_NUMBERS) + text[b:]

    def field(text: str) -> str:
        at = rng.choice([m.end() for m in re.finditer(r"\{", text)] or [0])
        return text[:at] + " " + rng.choice(BAD_FIELDS) + " " + text[at:]

    def layer_type(text: str) -> str:
        spans = [m.span(1) for m in re.finditer(r'type:\s*"([^"]*)"', text)]
        if not spans:
            return insert(text)
        a, b = rng.choice(spans)
        return text[:a] + rng.choice(TYPE_NAMES) + text[b:]

    def enum(text: str) -> str:
        spans = [m.span(1) for m in re.finditer(r"\b(?:pool|operation|norm_region|phase):\s*([A-Z_]+)", text)]
        if not spans:
            return field(text)
        a, b = rng.choice(spans)
        return text[:a] + rng.choice(["BOGUS", "max", "AVE ", "2", "-1", "TRAIN", "MAX MAX"]) + text[b:]

    def restructure(text: str) -> str:
        try:
            net = parse_prototxt(text)
        except ValueError:
            return insert(text)
        layer = rng.choice(net.layer) if net.layer else net.layer.add()
        own = PARAM_PREFIXES.get(layer.type)
        target = getattr(layer, f"{own}_param") if own and rng.random() < 0.6 else layer
        _set_random_field(rng, target)
        return text_format.MessageToString(net)

    syntax = (flip, truncate, insert, swap_tokens, drop_or_repeat_line)
    semantics = (number, field, layer_type, enum, restructure, restructure, restructure, restructure)
    return [(f.__name__, f) for f in syntax + semantics]


def _random_value(rng: random.Random, field) -> object:
    """A value the field's type can hold, biased to the edges Caffe's checks (or ours) must catch."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return rng.choice([math.nan, math.inf, -math.inf, -1.0, 0.0, 0.5, 2.0, 1e30])
    if kind == FieldDescriptor.TYPE_ENUM:
        return rng.choice(field.enum_type.values).number
    if kind in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        value = rng.choice(["", "data", "out", "loss", "nowhere", "label"])
        return value.encode() if kind == FieldDescriptor.TYPE_BYTES else value
    low, high = INT_RANGES.get(kind, (-(1 << 63), (1 << 63) - 1))
    return rng.choice([v for v in BAD_INTS if low <= v <= high])


def _set_random_field(rng: random.Random, message, depth: int = 0) -> None:
    """Set (or append to) one random field of ``message``, descending into sub-messages."""
    field = rng.choice(message.DESCRIPTOR.fields)
    if field.message_type is not None:
        child = getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
        child.SetInParent()
        if depth < 3 and child.DESCRIPTOR.fields:
            _set_random_field(rng, child, depth + 1)
    elif field.is_repeated:
        getattr(message, field.name).extend(_random_value(rng, field) for _ in range(rng.randint(1, 3)))
    else:
        setattr(message, field.name, _random_value(rng, field))



def _binary_mutations(rng: random.Random) -> List[Tuple[str, Callable[[bytes], bytes]]]:
    """Byte-level operators plus structured ones that keep the file valid protobuf but lie in it."""

    def flip(raw: bytes) -> bytes:
        data = bytearray(raw)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)

    def truncate(raw: bytes) -> bytes:
        return raw[: rng.randrange(len(raw))]

    def insert(raw: bytes) -> bytes:
        at = rng.randrange(len(raw) + 1)
        return raw[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + raw[at:]

    def zero_range(raw: bytes) -> bytes:
        at = rng.randrange(len(raw))
        size = rng.randint(1, 64)
        return raw[:at] + bytes(min(size, len(raw) - at)) + raw[at + size:]

    def restructure(raw: bytes) -> bytes:
        net = caffe_pb2.NetParameter.FromString(raw)
        layers = [layer for layer in net.layer if layer.blobs]
        layer = rng.choice(layers)
        blob = rng.choice(layer.blobs)
        change = rng.randrange(7)
        if change == 0:
            blob.shape.dim[rng.randrange(len(blob.shape.dim))] = rng.choice([0, -1, 2, 1 << 40])
        elif change == 1:
            blob.shape.dim.append(rng.choice([1, 2]))
        elif change == 2:
            blob.num, blob.channels = rng.choice([(-1, 1), (1, 0), (2, 2)])
        elif change == 3:
            del blob.data[rng.randrange(len(blob.data)):]
        elif change == 4:
            blob.double_data.extend(blob.data)
            if rng.random() < 0.5:
                blob.ClearField("data")
        elif change == 5:
            del layer.blobs[rng.randrange(len(layer.blobs))]
        else:
            blob.data[rng.randrange(len(blob.data))] = rng.choice([math.nan, math.inf, -1e38])
        return net.SerializeToString()

    return [(f.__name__, f) for f in (flip, truncate, insert, zero_range, restructure, restructure)]


def _make_mutants(folder: Path) -> List[Mutant]:
    """Write the seeded mutants under ``folder``; the same seed gives the same files."""
    rng = random.Random(FUZZ_SEED)
    mutants: List[Mutant] = []
    text_ops = _text_mutations(rng)
    for index in range(FUZZ_TEXT_CASES):
        fixture = rng.choice(TEXT_FIXTURES)
        text = (FIXTURES / fixture / "net.prototxt").read_text()
        descriptions = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            name, op = rng.choice(text_ops)
            text = op(text)
            descriptions.append(name)
        path = folder / f"case{index:03d}.prototxt"
        path.write_bytes(text.encode("utf-8", "surrogateescape"))
        mutants.append(Mutant(index, fixture, "+".join(descriptions), path))
    binary_ops = _binary_mutations(rng)
    for index in range(FUZZ_TEXT_CASES, FUZZ_TEXT_CASES + FUZZ_BINARY_CASES):
        fixture = rng.choice(BINARY_FIXTURES)
        raw = (FIXTURES / fixture / "net.caffemodel").read_bytes()
        name, op = rng.choice(binary_ops)
        raw = op(raw)
        if rng.random() < 0.1:
            raw = gzip.compress(raw, mtime=0)
            name += "+gzip"
        path = folder / f"case{index:03d}.caffemodel"
        path.write_bytes(raw)
        mutants.append(Mutant(index, fixture, name, FIXTURES / fixture / "net.prototxt", path))
    return mutants


def _run_one(prototxt: str, weights: Optional[str]) -> dict:
    """Build and run one mutant in this (worker) process; the outcome as a JSON-able dict."""
    stage = "construct"
    try:
        net = Net(prototxt, caffe_pb2.TEST, weights=weights)
        stage = "forward"
        rng = np.random.default_rng(0)
        for name in net.inputs:
            blob = net.blobs[name]
            blob.data[...] = rng.integers(0, 2, blob.shape)
        net.forward()
    except BaseException as error:  # the point is to see everything, SystemExit included
        return {"outcome": "error", "stage": stage, "type": f"{type(error).__module__}.{type(error).__qualname__}",
                "clean": isinstance(error, FUZZ_CLEAN), "message": str(error)[:2000]}
    return {"outcome": "ok"}


def _worker() -> None:
    """Read 'prototxt<TAB>weights' lines, answer one JSON line each, until stdin closes."""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    import torch
    torch.set_num_threads(1)
    answers, sys.stdout = sys.stdout, sys.stderr  # whatever the code under test prints stays off the channel
    for line in sys.stdin:
        prototxt, weights = line.rstrip("\n").split("\t")
        print(json.dumps(_run_one(prototxt, weights or None)), file=answers, flush=True)


class _Worker:
    """A worker subprocess and the per-case time limit around it."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, cwd=str(REPO), env=env)

    def run(self, mutant: Mutant, limit: float) -> dict:
        weights = "" if mutant.weights is None else str(mutant.weights)
        self.process.stdin.write(f"{mutant.prototxt}\t{weights}\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], limit)
        if not ready:
            self.close()
            return {"outcome": "hang", "limit_s": limit}
        line = self.process.stdout.readline()
        if not line:
            return {"outcome": "crash", "returncode": self.process.wait()}
        return json.loads(line)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def _fuzz(mutants: List[Mutant]) -> List[Tuple[Mutant, dict]]:
    """Every mutant's outcome; the first case of a worker also pays for its start (importing torch)."""
    results = []
    worker = _Worker()
    fresh = True
    try:
        for mutant in mutants:
            result = worker.run(mutant, CASE_LIMIT_S + (30.0 if fresh else 0.0))
            fresh = False
            if result["outcome"] in ("hang", "crash"):
                worker.close()
                worker, fresh = _Worker(), True
            results.append((mutant, result))
    finally:
        worker.close()
    return results


def _is_clean(result: dict) -> bool:
    if result["outcome"] == "ok":
        return True
    return result["outcome"] == "error" and result["clean"] and "\n" not in result["message"]


def test_fuzzed_prototxts_and_caffemodels_fail_cleanly(tmp_path):
    results = _fuzz(_make_mutants(tmp_path))
    bad = [(m, r) for m, r in results if not _is_clean(r)]
    report = "\n".join(f"case {m.index} ({m.fixture}, {m.mutation}): {m.weights or m.prototxt}: "
                       f"{json.dumps(r)[:400]}" for m, r in bad)
    assert not bad, f"{len(bad)} of {len(results)} mutants failed uncleanly:\n{report}"
    assert {r["outcome"] for _, r in results} == {"ok", "error"}, "the mutants should both build and fail"


if __name__ == "__main__":
    _worker()
