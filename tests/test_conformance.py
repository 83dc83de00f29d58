"""Whole nets against real BVLC Caffe: every blob forward, every blob and parameter diff after one backward.

The cases (layers/, losses/, fcn/) were run by real Caffe; see tests/fixtures/README.md. Weights and inputs
are set through the pycaffe API (``net.params[...].data``, ``net.blobs[...].data``) exactly as the fixture
generator did, so the API itself is under test too.
"""
import numpy as np
import pytest
import torch

from caffe_cases import Case, assert_close, case_names, prepared_net
from runner.net import Net

CASES = ([Case("layers", n) for n in case_names("layers")] + [Case("losses", n) for n in case_names("losses")]
         + [Case("fcn", n) for n in case_names("fcn")]
         + [Case("layers", n) for n in case_names("layers", "index_ext.json")]
         + [Case("losses", n) for n in case_names("losses", "index_ext.json")])


def _inputs_reshaped(case: Case) -> bool:
    """Whether the generator reshaped an Input blob before its forward (Filter's target: the filtered
    top's size is known only after a forward), so that Caffe's recorded blob shapes are post-forward ones."""
    net = Net(case.prototxt, case.phase)
    return any(net.blobs[name].shape != value.shape for name, value in case.arrays("inputs").items())


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.section}/{c.name}")
def test_net_structure_matches_caffe(case: Case) -> None:
    net = Net(case.prototxt, case.phase)
    want = [(layer["name"], layer["type"]) for layer in case.meta["caffe_layers_incl_auto_split"]]
    assert [(n, layer.type) for n, layer in zip(net._layer_names, net.layers)] == want
    assert set(net.blobs) == set(case.arrays("forward"))
    if _inputs_reshaped(case):
        net = prepared_net(case)
        net.forward()
    for name, shape in case.meta["blob_shapes"].items():
        assert net.blobs[name].shape == tuple(shape), name


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.section}/{c.name}")
def test_forward_backward_match_caffe(case: Case) -> None:
    net = prepared_net(case)
    net.forward()
    for name, want in case.arrays("forward").items():
        assert_close(net.blobs[name].data, want, case.tolerance, f"{case.name}: blob '{name}' forward")
    after = case.arrays("params_after_forward")
    for key, want in (after or {}).items():
        layer, index = key.rsplit("/", 1)
        assert_close(net.params[layer][int(index)].data, want, case.tolerance, f"{case.name}: {key} after forward")
    net.clear_param_diffs()
    net.backward()
    for name, want in case.arrays("diffs").items():
        assert_close(net.blobs[name].diff, want, max(case.tolerance, 1e-4), f"{case.name}: blob '{name}' diff")
    for key, want in case.arrays("param_diffs").items():
        layer, index = key.rsplit("/", 1)
        assert_close(net.params[layer][int(index)].diff, want, max(case.tolerance, 1e-4), f"{case.name}: param {key} diff")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.section}/{c.name}")
def test_inference_forward_matches_caffe(case: Case) -> None:
    """The same forward with no gradient recorded, as a deploy net or ``torch.no_grad()`` runs it: in-place
    layers overwrite, and layers take their inference forms (``Layer.forward_inference``)."""
    net = prepared_net(case)
    with torch.no_grad():
        net.forward()
    for name, want in case.arrays("forward").items():
        assert_close(net.blobs[name].data, want, case.tolerance, f"{case.name}: blob '{name}' forward")
    for key, want in (case.arrays("params_after_forward") or {}).items():
        layer, index = key.rsplit("/", 1)
        assert_close(net.params[layer][int(index)].data, want, case.tolerance, f"{case.name}: {key} after forward")


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.section}/{c.name}")
def test_caffemodel_weights_load(case: Case, tmp_path) -> None:
    path = tmp_path / "net.caffemodel"
    path.write_bytes(case.caffemodel_bytes())
    net = Net(case.prototxt, case.phase, weights=str(path))
    for key, want in case.arrays("params").items():
        layer, index = key.rsplit("/", 1)
        np.testing.assert_array_equal(net.params[layer][int(index)].data, want.astype(np.float32))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.section}/{c.name}")
def test_save_writes_caffes_bytes(case: Case, tmp_path) -> None:
    """Net.save right after setting the weights writes exactly the bytes real Caffe's Net.save wrote."""
    net = prepared_net(case)
    out = tmp_path / "saved.caffemodel"
    net.save(str(out))
    assert out.read_bytes() == case.caffemodel_bytes()
