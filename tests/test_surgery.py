"""Net surgery: transplant and convolutionalize against real Caffe's output, the paper's Section 3.1
equivalence (a convolutionalized classifier is the classifier slid over the image), bilinear interp
against Caffe's filler, expand_score, and the errors that guard them."""
import json
import os

import numpy as np
import pytest

from caffe_cases import ROOT, assert_close
from netspec import caffe_pb2
from netspec.caffemodel import load_caffemodel
from netspec.net_spec import L, NetSpec, P
from netspec.prototxt import parse_prototxt, write_prototxt
from runner.net import Net
from surgery import convolutionalize, expand_score, interp, transplant, upsample_filt

TEST = caffe_pb2.TEST
SURGERY = os.path.join(ROOT, "surgery")
CLASSIFIER = (os.path.join(ROOT, "upgrade", "v1_deploy.prototxt"), os.path.join(ROOT, "upgrade", "v1.caffemodel"))


def _npz(*parts: str) -> dict:
    with np.load(os.path.join(*parts)) as arrays:
        return dict(arrays)


def _forward_matches(net: Net, data: np.ndarray, reference: dict, what: str) -> None:
    net.blobs["data"].reshape(*data.shape)
    net.reshape()
    net.forward(data=data)
    for name, want in reference.items():
        assert_close(net.blobs[name].data, want, 1e-5, f"{what} {name}")


# ----- real Caffe: the V1 classifier of upgrade/ convolutionalized -----

@pytest.fixture(scope="module")
def transplanted(tmp_path_factory):
    out = tmp_path_factory.mktemp("surgery") / "transplanted.caffemodel"
    report = convolutionalize(*CLASSIFIER, os.path.join(SURGERY, "convnet.prototxt"), out)
    return report, str(out)


def test_convolutionalize_writes_caffes_weights_bitwise(transplanted) -> None:
    _, out = transplanted
    _, got = load_caffemodel(out)
    _, want = load_caffemodel(os.path.join(SURGERY, "transplanted.caffemodel"))
    assert list(got) == list(want)
    for layer in want:
        assert len(got[layer]) == len(want[layer])
        for g, w in zip(got[layer], want[layer]):
            assert g.shape == w.shape and g.dtype == w.dtype
            assert g.tobytes() == w.tobytes(), layer


def test_transplant_report_and_printed_lines_match_the_release(transplanted, capsys) -> None:
    report, _ = transplanted
    with open(os.path.join(SURGERY, "meta.json")) as f:
        meta = json.load(f)
    # the fixture generator joined its words with single spaces; the release prints ' -> ' with its own
    # spaces around it, between print's separators
    assert [" ".join(line.split()) for line in report.lines] == meta["transplant_log"]
    assert "copying conv1_1  ->  conv1_1 0" in report.lines
    assert [(m.layer, m.index) for m in report.coerced] == [("fc6", 0), ("fc7", 0), ("fc8", 0)]
    assert report.coerced[0].old_shape == (32, 512) and report.coerced[0].new_shape == (32, 8, 8, 8)
    assert len(report.copied) == 11 and report.dropped == [] and report.untouched == []

    classifier = Net(CLASSIFIER[0], TEST, weights=CLASSIFIER[1])
    capsys.readouterr()
    transplant(Net(os.path.join(SURGERY, "convnet.prototxt"), TEST), classifier)
    assert capsys.readouterr().out.splitlines() == report.lines


def test_convolutionalized_forward_matches_caffe(transplanted) -> None:
    _, out = transplanted
    inputs = _npz(SURGERY, "inputs.npz")
    net = Net(os.path.join(SURGERY, "convnet.prototxt"), TEST, weights=out)
    _forward_matches(net, inputs["data_48x64"], _npz(SURGERY, "forward_48x64.npz"), "48x64")
    _forward_matches(net, inputs["data_32x32"], _npz(SURGERY, "forward_32x32.npz"), "32x32")
    fc8 = net.blobs["fc8"].data.reshape(1, 10)

    classifier = Net(CLASSIFIER[0], TEST, weights=CLASSIFIER[1])
    _forward_matches(classifier, inputs["data_32x32"], _npz(SURGERY, "classifier_forward_32x32.npz"), "classifier")
    assert_close(fc8, classifier.blobs["fc8"].data, 1e-5, "fc8 as 1x1 conv vs classifier")


# ----- the paper's Section 3.1: the FCN is the classifier slid over the image -----

WINDOW, STRIDE, CLASSES = 18, 4, 5  # two valid 3x3 convs and two 2x2/2 poolings: 18 -> 16 -> 8 -> 6 -> 3


def _features(n: NetSpec, shape) -> None:
    """Unpadded convolutions, so each output cell sees exactly its window and nothing outside it."""
    n.data = L.Input(shape=dict(dim=list(shape)))
    n.conv1 = L.Convolution(n.data, num_output=4, kernel_size=3)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, num_output=6, kernel_size=3)
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.pool2 = L.Pooling(n.relu2, pool=P.Pooling.MAX, kernel_size=2, stride=2)


def _classifier(batch: int) -> caffe_pb2.NetParameter:
    n = NetSpec()
    _features(n, (batch, 3, WINDOW, WINDOW))
    n.fc6 = L.InnerProduct(n.pool2, num_output=16)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.fc7 = L.InnerProduct(n.relu6, num_output=12)
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.fc8 = L.InnerProduct(n.relu7, num_output=CLASSES)
    return n.to_proto()


def _fcn(height: int, width: int) -> caffe_pb2.NetParameter:
    n = NetSpec()
    _features(n, (1, 3, height, width))
    n.fc6 = L.Convolution(n.pool2, num_output=16, kernel_size=3)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.fc7 = L.Convolution(n.relu6, num_output=12, kernel_size=1)
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.fc8 = L.Convolution(n.relu7, num_output=CLASSES, kernel_size=1)
    return n.to_proto()


def test_convolutionalized_classifier_scores_every_window(tmp_path) -> None:
    rows, cols = 6, 8
    height, width = WINDOW + STRIDE * (rows - 1), WINDOW + STRIDE * (cols - 1)
    rng = np.random.default_rng(0)
    classifier = Net(_classifier(1), TEST)
    for blobs in classifier.params.values():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.shape).astype(np.float32) * 0.5
    write_prototxt(tmp_path / "classifier.prototxt", _classifier(1))
    classifier.save(str(tmp_path / "classifier.caffemodel"))
    report = convolutionalize(tmp_path / "classifier.prototxt", tmp_path / "classifier.caffemodel",
                              _fcn(height, width), tmp_path / "fcn.caffemodel")
    assert [m.new_shape for m in report.coerced] == [(16, 6, 3, 3), (12, 16, 1, 1), (CLASSES, 12, 1, 1)]

    image = rng.standard_normal((1, 3, height, width)).astype(np.float32)
    fcn = Net(_fcn(height, width), TEST, weights=str(tmp_path / "fcn.caffemodel"))
    dense = fcn.forward(data=image)["fc8"][0]
    assert dense.shape == (CLASSES, rows, cols)

    windows = np.stack([image[0, :, STRIDE * i:STRIDE * i + WINDOW, STRIDE * j:STRIDE * j + WINDOW]
                        for i in range(rows) for j in range(cols)])
    sliding = Net(_classifier(len(windows)), TEST, weights=str(tmp_path / "classifier.caffemodel"))
    scores = sliding.forward(data=windows)["fc8"].reshape(rows, cols, CLASSES).transpose(2, 0, 1)
    np.testing.assert_allclose(dense, scores, rtol=1e-4, atol=1e-5)


# ----- interp: Caffe's bilinear filler, on the diagonal only -----

BILINEAR = _npz(ROOT, "fillers", "bilinear.npz")


@pytest.mark.parametrize("name", sorted(BILINEAR))
def test_upsample_filt_is_caffes_bilinear_filler(name: str) -> None:
    caffe = BILINEAR[name]
    for out in range(caffe.shape[0]):
        for inp in range(caffe.shape[1]):
            np.testing.assert_array_equal(upsample_filt(caffe.shape[-1]), caffe[out, inp])


def _one_layer_net(channels: int, layer: str) -> Net:
    """An Input of ``channels`` x 3 x 3 feeding one layer (given as prototxt) with random fillers."""
    data = f'shape {{ dim: 1 dim: {channels} dim: 3 dim: 3 }}'
    return Net(parse_prototxt(f'layer {{ name: "data" type: "Input" top: "data" input_param {{ {data} }} }}\n'
                              f'layer {{ {layer} bottom: "data" top: "out" }}'), TEST)


def _deconv_net(channels: int, kernel: str, group: int = 1) -> Net:
    return _one_layer_net(channels, f'name: "up" type: "Deconvolution" convolution_param {{ num_output: {channels} '
                                    f'bias_term: false {kernel} stride: 2 group: {group} '
                                    f'weight_filler {{ type: "gaussian" std: 1 }} }}')


@pytest.mark.parametrize("name", ["up_k4_s2_g1_c3", "up_k5_s3_g3_odd", "up_k16_s8_g21"])
def test_interp_puts_the_bilinear_kernel_on_the_diagonal(name: str) -> None:
    caffe = BILINEAR[name]
    channels, size = caffe.shape[0], caffe.shape[-1]
    net = _deconv_net(channels, f"kernel_size: {size}")
    before = net.params["up"][0].data.copy()
    interp(net, ["up"])
    weight = net.params["up"][0].data
    diagonal = np.arange(channels)
    np.testing.assert_array_equal(weight[diagonal, diagonal], caffe[diagonal, 0])
    off = ~np.eye(channels, dtype=bool)
    np.testing.assert_array_equal(weight[off], before[off])  # the release writes the diagonal only


def test_interp_on_a_grouped_layer_equals_caffes_filler() -> None:
    net = _deconv_net(21, "kernel_size: 4", group=21)
    interp(net, ["up"])
    np.testing.assert_array_equal(net.params["up"][0].data, BILINEAR["up_k4_s2_g21"])


# ----- expand_score -----

def _score_net(classes: int, name: str = "score", bias: bool = True) -> Net:
    fillers = 'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 }'
    return _one_layer_net(6, f'name: "{name}" type: "Convolution" convolution_param {{ num_output: {classes} '
                             f'kernel_size: 1 bias_term: {str(bias).lower()} {fillers} }}')


def test_expand_score_fills_the_first_outputs() -> None:
    old, new = _score_net(4), _score_net(7)
    before = [blob.data.copy() for blob in new.params["score"]]
    expand_score(new, "score", old, "score")
    for index, blob in enumerate(new.params["score"]):
        np.testing.assert_array_equal(blob.data[:4], old.params["score"][index].data)
        np.testing.assert_array_equal(blob.data[4:], before[index][4:])


def test_expand_score_refuses_fewer_outputs() -> None:
    with pytest.raises(ValueError, match=r"score blob 0 \(7, 6, 1, 1\) does not fit"):
        expand_score(_score_net(4), "score", _score_net(7), "score")


# ----- errors -----

def test_transplant_fills_a_blob_of_another_size_flat_as_the_release_does() -> None:
    """The release assigns ``.flat``: a smaller source repeats, a larger one is cut; it says 'coercing'."""
    classifier = Net(CLASSIFIER[0], TEST, weights=CLASSIFIER[1])
    body = parse_prototxt(open(os.path.join(SURGERY, "convnet.prototxt")).read())
    fc6 = next(layer for layer in body.layer if layer.name == "fc6")
    fc6.convolution_param.kernel_size[0] = 7
    target = Net(body, TEST)
    report = transplant(target, classifier, echo=False)
    move = next(m for m in report.coerced if m.layer == "fc6")
    assert move.resized and move.line == "coercing fc6 0 from (32, 512) to (32, 8, 7, 7)"
    source = classifier.params["fc6"][0].data.ravel()
    got = target.params["fc6"][0].data.ravel()
    np.testing.assert_array_equal(got, source[:got.size])
    assert not next(m for m in report.coerced if m.layer == "fc7").resized


def test_transplant_suffix_and_drops() -> None:
    old = _score_net(4)
    report = transplant(_score_net(4), old, suffix="_x")
    assert report.lines == ["dropping score"] and report.untouched == ["score"]
    new = _score_net(4, name="score_x", bias=False)
    report = transplant(new, old, suffix="_x")
    assert report.lines == ["copying score  ->  score_x 0", "dropping score 1"]
    np.testing.assert_array_equal(new.params["score_x"][0].data, old.params["score"][0].data)


def test_interp_refuses_a_non_square_kernel() -> None:
    with pytest.raises(ValueError, match="non-square 4x2"):
        interp(_deconv_net(3, "kernel_h: 4 kernel_w: 2"), ["up"])
