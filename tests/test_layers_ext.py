"""The layer types beyond FCN's (layers/ and losses/ index_ext.json): what the conformance cases cannot show
on their own. Where real Caffe aborts a backward (no backward, indices it cannot differentiate), the runner
refuses with Caffe's reason; data-dependent Filter sizes; recurrent state and LSTMUnit against real Caffe."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pytest
from google.protobuf import text_format

import fcn.caffe as caffe
from caffe_cases import Case, assert_close, case_names, prepared_net
from fcn.caffe_io import array_to_blobproto
from netspec import caffe_pb2
from runner.net import Net

EXT_CASES = ([Case("layers", n) for n in case_names("layers", "index_ext.json")]
             + [Case("losses", n) for n in case_names("losses", "index_ext.json")])
REFUSED = [c for c in EXT_CASES if "same_net_with_force_backward_true" in c.meta]


def _variant(case: Case, force_backward: bool, propagate_down: Optional[Sequence[bool]] = None,
             layer: Optional[str] = None) -> "caffe_pb2.NetParameter":
    """The case's prototxt with force_backward set and, on ``layer``, the given propagate_down."""
    net = text_format.Parse(open(case.prototxt).read(), caffe_pb2.NetParameter())
    net.force_backward = force_backward
    for lp in net.layer:
        del lp.propagate_down[:]
        if lp.name == layer:
            lp.propagate_down.extend(propagate_down)
    return net


def _caffe_reason(case: Case) -> str:
    """Real Caffe's fatal message without its source position and CHECK expression."""
    message = case.meta["same_net_with_force_backward_true"]["fatal_message"].split("] ", 1)[1]
    return message.split("] ", 1)[1] if message.startswith("Check failed:") else message


def test_layer_type_list_has_every_bvlc_computing_layer() -> None:
    wanted = {"ELU", "Exp", "Log", "BNLL", "Threshold", "Tile", "Reduction", "MVN", "Embed", "SPP", "Clip",
              "Swish", "Filter", "Parameter", "BatchReindex", "Im2col", "HingeLoss", "InfogainLoss",
              "ContrastiveLoss", "MultinomialLogisticLoss", "RNN", "LSTM", "LSTMUnit"}
    assert wanted <= set(caffe.layer_type_list())


def test_refusal_cases_are_those_caffe_aborted() -> None:
    assert {c.name for c in REFUSED} == {"threshold_0.3", "argmax_axis1", "embed_bias", "embed_nobias", "filter",
                                         "batch_reindex", "infogain_H_bottom", "infogain_axis2"}


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_force_backward_is_refused_where_caffe_aborts(case: Case) -> None:
    """Real Caffe ran these nets with force_backward: forward, then an abort in backward. Here forward runs
    and backward raises Caffe's reason before any diff changes."""
    net = prepared_net(case, _variant(case, force_backward=True))
    net.forward()
    assert_close(net.blobs["loss"].data, case.arrays("forward")["loss"], 1e-5, f"{case.name}: loss")
    with pytest.raises(ValueError) as err:
        net.backward()
    assert _caffe_reason(case) in str(err.value)
    assert "\n" not in str(err.value)
    for blobs in net.params.values():
        assert not any(np.any(blob.diff) for blob in blobs)


@pytest.mark.parametrize("name, down", [("embed_bias", [False]), ("filter", [True, False]),
                                        ("batch_reindex", [True, False])])
def test_force_backward_overrides_propagate_down_false(name: str, down: Sequence[bool]) -> None:
    """Caffe's Net::Init ORs force_backward's AllowForceBackward into every bottom's flag after reading
    propagate_down, so propagate_down false on the indices does not save these nets from the abort."""
    case = Case("layers", name)
    net = prepared_net(case, _variant(case, True, down, layer="out"))
    net.forward()
    with pytest.raises(ValueError, match="cannot back-propagate, as in Caffe"):
        net.backward()


@pytest.mark.parametrize("name, down", [("embed_bias", [True]), ("filter", [True, True]),
                                        ("batch_reindex", [True, True])])
def test_propagate_down_on_the_indices_without_force_backward(name: str, down: Sequence[bool]) -> None:
    """These layers run backward for their learned weights (Embed) or the learned Bias in front (Filter,
    BatchReindex). Asked explicitly for the indices' gradient (propagate_down true, the last bottom),
    Caffe aborts, and so does the runner; with it false they give Caffe's parameter diffs."""
    case = Case("layers", name)
    net = prepared_net(case, _variant(case, False, down, layer="out"))
    net.forward()
    with pytest.raises(ValueError, match="cannot back-propagate, as in Caffe"):
        net.backward()
    net = prepared_net(case, _variant(case, False, list(down[:-1]) + [False], layer="out"))
    net.forward()
    net.clear_param_diffs()
    net.backward()
    for key, want in case.arrays("param_diffs").items():
        layer, index = key.rsplit("/", 1)
        assert_close(net.params[layer][int(index)].diff, want, 1e-4, key)


def test_filter_top_is_sized_by_the_selector_at_forward() -> None:
    case = Case("layers", "filter")
    net = Net(case.prototxt, case.phase)
    assert net.blobs["out"].shape == (5, 3, 2, 2)  # Caffe's first Reshape: the bottom's size
    net = prepared_net(case)
    net.forward()
    assert net.blobs["out"].shape == (3, 3, 2, 2)
    net.blobs["sel"].data[...] = [0, 2, 0, 0, -1]
    net.blobs["target"].reshape(2, 3, 2, 2)
    net.forward()
    np.testing.assert_array_equal(net.blobs["out"].data, net.blobs["pre"].data[[1, 4]])


def _with_steps(case: Case, steps: int) -> "caffe_pb2.NetParameter":
    """The recurrent case's net for ``steps`` time steps instead of 4."""
    net = _variant(case, force_backward=True)
    for lp in net.layer:
        if lp.type == "Input" and lp.name in ("x", "cont", "target"):
            lp.input_param.shape[0].dim[0] = steps
    return net


@pytest.mark.parametrize("name", ["rnn_T4_N2", "lstm_T4_N2"])
def test_state_carries_over_to_the_next_forward(name: str) -> None:
    """Without expose_hidden Caffe starts each forward from the last one's final state: two forwards of
    two steps give real Caffe's four-step outputs (stream 1 restarts at step 3, stream 0 carries on)."""
    case = Case("layers", name)
    inputs = case.arrays("inputs")
    net = Net(_with_steps(case, 2), case.phase)
    for key, value in case.arrays("params").items():
        net.params["out"][int(key.rsplit("/", 1)[1])].data[...] = value
    want = case.arrays("forward")["out"]
    for half in (slice(0, 2), slice(2, 4)):
        net.forward(x=inputs["x"][half], cont=inputs["cont"][half], target=inputs["target"][half])
        assert_close(net.blobs["out"].data, want[half], 1e-5, f"steps {half}")


@pytest.mark.parametrize("name", ["rnn_T4_N2", "lstm_T4_N2"])
def test_static_input_enters_every_step(name: str, tmp_path) -> None:
    """A static input (N, S) adds ``W_static s`` at every step, W_static being parameter 2 (after the input
    transform's weights and bias). With the same s for every stream and that term taken off the bias, the
    net is real Caffe's net without a static input: same outputs, same input gradient."""
    case = Case("layers", name)
    text = open(case.prototxt).read().replace('bottom: "cont"', 'bottom: "cont"\n  bottom: "s"', 1)
    path = tmp_path / "net.prototxt"
    path.write_text('layer { name: "s" type: "Input" top: "s" input_param { shape { dim: 2 dim: 3 } } }\n' + text)
    net = Net(str(path), case.phase)
    params, inputs = case.arrays("params"), case.arrays("inputs")
    rng = np.random.RandomState(0)
    static = rng.randn(3).astype(np.float32)
    w_static = rng.randn(*net.params["out"][2].data.shape).astype(np.float32)
    caffe_blobs = [params[f"out/{i}"] for i in range(len(params))]
    caffe_blobs[1] = caffe_blobs[1] - w_static @ static
    for blob, value in zip(net.params["out"], caffe_blobs[:2] + [w_static] + caffe_blobs[2:]):
        blob.data[...] = value
    net.blobs["s"].data[...] = static
    for key in ("x", "cont", "target"):
        net.blobs[key].data[...] = inputs[key]
    net.forward()
    net.backward()
    assert_close(net.blobs["out"].data, case.arrays("forward")["out"], 1e-5, "out")
    assert_close(net.blobs["x"].diff, case.arrays("diffs")["x"], 1e-4, "x diff")


def test_recurrent_steps_are_fixed_when_the_net_is_built() -> None:
    net = Net(Case("layers", "lstm_T4_N2").prototxt, caffe.TRAIN)
    net.blobs["x"].reshape(5, 2, 3)
    net.blobs["cont"].reshape(5, 2)
    with pytest.raises(ValueError, match="timesteps changed"):
        net.reshape()


LSTM_UNIT_NET = """
name: "unit"
layer { name: "c_prev" type: "Input" top: "c_prev" input_param { shape { dim: 1 dim: 2 dim: 5 } } }
layer { name: "gates" type: "Input" top: "gates" input_param { shape { dim: 1 dim: 2 dim: 20 } } }
layer { name: "cont" type: "Input" top: "cont" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "unit" type: "LSTMUnit" bottom: "c_prev" bottom: "gates" bottom: "cont" top: "c" top: "h" }
"""


def test_lstm_unit_steps_reproduce_caffes_lstm(tmp_path) -> None:
    """LSTMUnit, stepped with gate inputs made from real Caffe's LSTM weights, gives that LSTM's outputs and
    final states (lstm_expose_hidden)."""
    case = Case("layers", "lstm_expose_hidden")
    inputs, params, want = case.arrays("inputs"), case.arrays("params"), case.arrays("forward")
    w_xc, b_c, w_hc = (params[f"out/{i}"].astype(np.float64) for i in range(3))
    path = tmp_path / "unit.prototxt"
    path.write_text(LSTM_UNIT_NET)
    net = Net(str(path), caffe.TEST)
    h, c = inputs["h0"][0], inputs["c0"]
    for t in range(4):
        cont = inputs["cont"][t]
        gates = (cont[:, None] * h) @ w_hc.T + inputs["x"][t] @ w_xc.T + b_c
        out = net.forward(c_prev=c, gates=gates[None].astype(np.float32), cont=cont[None])
        c, h = out["c"].copy(), out["h"][0].copy()
        assert_close(h, want["out"][t], 1e-5, f"h at step {t + 1}")
    assert_close(h[None], want["hT"], 1e-5, "hT")
    assert_close(c, want["cT"], 1e-5, "cT")


def test_infogain_matrix_from_a_source_file(tmp_path) -> None:
    """InfogainLoss with H read from a binary BlobProto file gives real Caffe's loss and gradient for the
    same H given as a bottom."""
    case = Case("losses", "infogain_H_bottom")
    inputs = case.arrays("inputs")
    source = tmp_path / "H.binaryproto"
    source.write_bytes(array_to_blobproto(inputs["H"]).SerializeToString())
    net_param = _variant(case, force_backward=False)
    for lp in net_param.layer:
        if lp.type == "InfogainLoss":
            del lp.bottom[2]
            lp.infogain_loss_param.source = str(source)
    net_param.layer.remove(next(lp for lp in net_param.layer if lp.name == "H"))
    net = Net(net_param, case.phase)
    for key, value in case.arrays("params").items():
        net.params[key.rsplit("/", 1)[0]][0].data[...] = value
    net.blobs["scores"].data[...] = inputs["scores"]
    net.blobs["label"].data[...] = inputs["label"]
    net.forward()
    net.backward()
    assert_close(net.blobs["loss"].data, case.arrays("forward")["loss"], 1e-5, "loss")
    assert_close(net.blobs["x"].diff, case.arrays("diffs")["x"], 1e-4, "x diff")


def test_parameter_top_is_the_parameter() -> None:
    """As in Caffe, where the forward makes the top share the parameter's data: writing one writes the other."""
    net = prepared_net(Case("layers", "parameter_eltwise"))
    net.forward()
    net.blobs["p"].data[...] = 3.0
    assert np.all(net.params["p"][0].data == 3.0)
    net.forward()
    np.testing.assert_allclose(net.blobs["out"].data, net.blobs["data"].data + 3.0, rtol=1e-6)


def test_im2col_columns_times_weights_are_the_convolution(tmp_path) -> None:
    """Caffe's convolution is its weights times Im2col's columns; checked on a 3-D (N, C, D, H, W) input
    with stride, pad and dilation, where the layers share convolution_param."""
    geometry = "kernel_size: 3 kernel_size: 2 kernel_size: 3 stride: 2 stride: 1 stride: 1 pad: 1 dilation: 1 dilation: 2 dilation: 1"
    path = tmp_path / "net.prototxt"
    path.write_text(f"""
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: 5 dim: 6 dim: 7 }} }} }}
layer {{ name: "cols" type: "Im2col" bottom: "data" top: "cols" convolution_param {{ {geometry} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
         convolution_param {{ num_output: 4 bias_term: false {geometry} }} }}""")
    net = Net(str(path), caffe.TEST)
    rng = np.random.RandomState(0)
    net.blobs["data"].data[...] = rng.randn(*net.blobs["data"].shape)
    net.params["conv"][0].data[...] = rng.randn(*net.params["conv"][0].data.shape)
    out = net.forward()
    weights = net.params["conv"][0].data.reshape(4, -1)
    cols = out["cols"].reshape(2, weights.shape[1], -1)
    assert_close((weights @ cols).reshape(out["conv"].shape), out["conv"], 1e-5, "conv from columns")


def test_accuracy_refuses_backward_under_force_backward_as_caffe_does() -> None:
    """losses/README: Accuracy's Backward is NOT_IMPLEMENTED, so Caffe's fixtures ran it without force_backward;
    with it the forward still matches and backward gives Caffe's reason."""
    case = Case("losses", "accuracy_ignore_top1")
    net = prepared_net(case, _variant(case, force_backward=True))
    net.forward()
    assert_close(net.blobs["accuracy"].data, case.arrays("forward")["accuracy"], 1e-6, "accuracy")
    with pytest.raises(ValueError, match="no backward for Accuracy"):
        net.backward()
    plain = prepared_net(case, _variant(case, force_backward=False))
    plain.forward()
    plain.backward()  # nothing needs a gradient: nothing to refuse
