"""The runtime-built caffe_pb2 must read and write what real Caffe wrote.

The fixtures under caffe_reference were produced by BVLC Caffe, so parsing
them without unknown fields and re-serialising them to identical bytes checks
field numbers, wire types and packing; the spot checks pin defaults that the
runner relies on.
"""
import gzip
import json
import os
from pathlib import Path

import pytest
from google.protobuf import text_format

from netspec import caffe_pb2
from netspec.proto_loader import ProtoSyntaxError, load_proto, parse_proto

FIXTURES = Path(__file__).parent / "fixtures" / "caffe_reference"
PROTOTXTS = sorted(FIXTURES.rglob("*.prototxt"))
CAFFEMODELS = sorted(FIXTURES.rglob("*.caffemodel")) + sorted(FIXTURES.rglob("*.caffemodel.gz"))
SOLVERSTATES = sorted(FIXTURES.rglob("*.solverstate"))


def _ids(paths):
    return [str(p.relative_to(FIXTURES)) for p in paths]


def _message_for(path: Path):
    return caffe_pb2.SolverParameter() if "solver" in path.name else caffe_pb2.NetParameter()


def _assert_no_unknown_fields(message, data: bytes) -> None:
    """Unknown fields survive a round trip, so compare against a stripped copy."""
    stripped = type(message)()
    stripped.CopyFrom(message)
    stripped.DiscardUnknownFields()
    assert stripped.SerializeToString() == data, "schema does not know some field Caffe wrote"


def test_fixtures_present():
    assert PROTOTXTS and CAFFEMODELS and SOLVERSTATES


@pytest.mark.parametrize("path", PROTOTXTS, ids=_ids(PROTOTXTS))
def test_prototxt_parses_and_round_trips(path):
    message = text_format.Parse(path.read_text(), _message_for(path))
    again = text_format.Parse(text_format.MessageToString(message), _message_for(path))
    assert again == message


@pytest.mark.parametrize("path", CAFFEMODELS, ids=_ids(CAFFEMODELS))
def test_caffemodel_round_trips_byte_identical(path):
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    net = caffe_pb2.NetParameter.FromString(data)
    assert len(net.layer) + len(net.layers) > 0
    assert net.SerializeToString() == data
    _assert_no_unknown_fields(net, data)


@pytest.mark.parametrize("path", SOLVERSTATES, ids=_ids(SOLVERSTATES))
def test_solverstate_parses(path):
    data = path.read_bytes()
    state = caffe_pb2.SolverState.FromString(data)
    expected = json.loads((path.parent / "meta.json").read_text()).get("solverstate")
    if expected is not None:  # the solver cases describe theirs; the caffe tool's runs name theirs by iteration
        assert state.iter == expected["iter"]
        assert state.current_step == expected["current_step"]
        assert state.learned_net.endswith(expected["learned_net"])
        assert len(state.history) == expected["n_history"]
    else:
        assert path.name == os.path.splitext(os.path.basename(state.learned_net))[0] + ".solverstate"
    assert state.SerializeToString() == data
    _assert_no_unknown_fields(state, data)


def test_defaults_that_matter():
    assert caffe_pb2.PoolingParameter().pool == caffe_pb2.PoolingParameter.MAX
    assert caffe_pb2.PoolingParameter().round_mode == caffe_pb2.PoolingParameter.CEIL
    assert caffe_pb2.PoolingParameter().stride == 1
    assert caffe_pb2.ConvolutionParameter().bias_term is True
    assert caffe_pb2.ConvolutionParameter().group == 1
    assert caffe_pb2.LossParameter().normalization == caffe_pb2.LossParameter.VALID
    solver = caffe_pb2.SolverParameter()
    assert solver.momentum2 == pytest.approx(0.999)
    assert solver.delta == pytest.approx(1e-8)
    assert solver.rms_decay == pytest.approx(0.99)
    assert solver.type == "SGD"
    assert solver.regularization_type == "L2"
    assert solver.clip_gradients == -1
    assert solver.random_seed == -1
    assert solver.iter_size == 1
    assert solver.snapshot_format == caffe_pb2.SolverParameter.BINARYPROTO
    assert caffe_pb2.NetState().phase == caffe_pb2.TEST
    assert caffe_pb2.BatchNormParameter().eps == pytest.approx(1e-5)
    assert caffe_pb2.BatchNormParameter().moving_average_fraction == pytest.approx(0.999)
    assert caffe_pb2.FillerParameter().type == "constant"
    assert caffe_pb2.FillerParameter().sparse == -1
    assert caffe_pb2.CropParameter().axis == 2
    assert caffe_pb2.ParamSpec().lr_mult == 1.0
    assert caffe_pb2.LRNParameter().beta == pytest.approx(0.75)
    assert caffe_pb2.WindowDataParameter().crop_mode == "warp"


def test_field_numbers_that_matter():
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assert fields["convolution_param"].number == 106
    assert fields["python_param"].number == 130
    assert fields["crop_param"].number == 144
    assert fields["pooling_param"].number == 121
    assert fields["clip_param"].number == 148
    assert caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name["layer"].number == 100
    assert caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name["data"].GetOptions().packed


def test_enums_as_generated_code_exposes_them():
    assert (caffe_pb2.TRAIN, caffe_pb2.TEST) == (0, 1)
    assert caffe_pb2.Phase.Name(caffe_pb2.TEST) == "TEST"
    assert caffe_pb2.PoolingParameter.AVE == 1
    assert caffe_pb2.PoolingParameter.PoolMethod.Value("STOCHASTIC") == 2
    assert caffe_pb2.V1LayerParameter.CONVOLUTION == 4
    assert caffe_pb2.V1LayerParameter.DECONVOLUTION == 39
    assert caffe_pb2.LossParameter.NONE == 3
    assert caffe_pb2.DESCRIPTOR.package == "caffe"


def test_loader_accepts_the_supported_syntax(tmp_path):
    path = tmp_path / "demo.proto"
    path.write_text(
        '/* block\n comment */ syntax = "proto2";\npackage demo;\n'
        "message Outer {\n"
        "  enum Kind { A = 0; B = -1; }\n"
        "  message Inner { optional int32 x = 1 [default = -3]; }\n"
        "  optional Kind kind = 1 [default = B];  // trailing comment\n"
        "  repeated float f = 2 [packed = true];\n"
        "  optional double d = 3 [default = 1e-5];\n"
        "  optional string s = 4 [default = 'hi'];\n"
        "  optional bool b = 5 [default = true];\n"
        "  required Inner inner = 6;\n"
        "  optional Top top = 7;\n"
        "}\n"
        "message Top { optional Outer.Inner i = 1; }\n"
    )
    _, classes = load_proto(path)
    outer = classes["Outer"]()
    assert outer.kind == -1 and outer.d == pytest.approx(1e-5) and outer.s == "hi" and outer.b
    assert outer.inner.x == -3
    assert classes["Top"]().i.x == -3


@pytest.mark.parametrize("source, line, expected", [
    ('syntax = "proto2";\nmessage M {\n  optional int32 x 1;\n}\n', 3, "expected '='"),
    ('message M {\n  optional Nope x = 1;\n}\n', 2, "known type"),
    ('message M {\n  optional int32 x = 1;\n', 3, "expected '}'"),
    ('message M {\n\n  optional bool x = 1 [default = 3];\n}\n', 3, "true or false"),
    ('message M {\n  optional int32 x = 1 [deprecated = true];\n}\n', 2, "'default' or 'packed'"),
])
def test_loader_errors_name_the_line(source, line, expected):
    with pytest.raises(ProtoSyntaxError) as err:
        parse_proto(source, "bad.proto")
    assert f"bad.proto:{line}:" in str(err.value)
    assert expected in str(err.value)
