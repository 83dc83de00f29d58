"""Segmentation metrics: the paper's formulas on hand-made histograms, and scoring a real net."""
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from netspec import caffe_pb2
from runner.net import Net
from solvers.score import compute_hist, fast_hist, scores_from_hist, voc_palette


def test_fast_hist_numpy_and_torch_agree_and_skip_void() -> None:
    rng = np.random.RandomState(0)
    truth = rng.randint(0, 4, size=(50, 60))
    truth[:5] = 255
    pred = rng.randint(0, 4, size=(50, 60))
    expected = np.zeros((4, 4), dtype=np.int64)
    for t, p in zip(truth.ravel(), pred.ravel()):
        if t < 4:
            expected[t, p] += 1
    np.testing.assert_array_equal(fast_hist(truth, pred, 4), expected)
    np.testing.assert_array_equal(fast_hist(torch.tensor(truth), torch.tensor(pred), 4).numpy(), expected)


def test_metrics_match_the_paper_formulas() -> None:
    hist = np.array([[50, 10, 0], [5, 35, 0], [0, 0, 0]], dtype=np.float64)
    s = scores_from_hist(hist)
    assert s.pixel_accuracy == pytest.approx(85 / 100)
    assert s.mean_accuracy == pytest.approx(np.mean([50 / 60, 35 / 40]))
    iu = [50 / (60 + 55 - 50), 35 / (40 + 45 - 35)]
    assert s.mean_iu == pytest.approx(np.mean(iu))  # class 2 never occurs: NaN, left out
    assert s.fw_iu == pytest.approx(0.6 * iu[0] + 0.4 * iu[1])
    assert np.isnan(s.per_class_iu[2])
    # Predicted but absent in the truth: counts in the release's mean IU (as 0), not under SIFT Flow's rule.
    hist2 = np.array([[50, 10, 5], [5, 30, 0], [0, 0, 0]], dtype=np.float64)
    assert scores_from_hist(hist2).mean_iu < scores_from_hist(hist2, present_only=True).mean_iu


FEED = '''
import numpy as np
from fcn.caffe import Layer

class Feed(Layer):
    """Two fixed images: scores whose argmax is known, and their labels."""
    def setup(self, bottom, top):
        self.i = 0
    def reshape(self, bottom, top):
        top[0].reshape(1, 3, 4, 5)
        top[1].reshape(1, 1, 4, 5)
    def forward(self, bottom, top):
        rng = np.random.RandomState(self.i)
        self.i += 1
        top[0].data[...] = rng.randn(1, 3, 4, 5)
        label = rng.randint(0, 3, size=(1, 1, 4, 5)).astype(np.float32)
        label[0, 0, 0, 0] = 255
        top[1].data[...] = label
'''


def test_compute_hist_scores_a_net_and_writes_palette_pngs(tmp_path, monkeypatch) -> None:
    (tmp_path / "feed_layer.py").write_text(FEED)
    proto = tmp_path / "net.prototxt"
    proto.write_text(textwrap.dedent("""
    layer { name: "data" type: "Python" top: "score" top: "label" python_param { module: "feed_layer" layer: "Feed" } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
            loss_param { ignore_label: 255 normalize: false } }
    """))
    net = Net(str(proto), caffe_pb2.TEST)
    hist, loss = compute_hist(net, str(tmp_path / "pred"), ["a", "b"], layer="score", gt="label")
    expected = np.zeros((3, 3), dtype=np.int64)
    for seed in range(2):
        rng = np.random.RandomState(seed)
        score = rng.randn(1, 3, 4, 5)
        label = rng.randint(0, 3, size=(1, 1, 4, 5))
        label[0, 0, 0, 0] = 255
        expected += fast_hist(label[0, 0], score[0].argmax(0), 3)
    np.testing.assert_array_equal(hist, expected)
    assert loss is not None and loss > 0
    png = Image.open(tmp_path / "pred" / "b.png")
    assert png.mode == "P" and png.size == (5, 4)
    assert np.array_equal(np.array(png.getpalette()[:9]).reshape(3, 3), voc_palette()[:3])


def test_score_heads_follow_the_release_names() -> None:
    from solvers.score import score_heads
    assert score_heads(["data", "label", "score", "loss"]) == [("score", "label", False)]
    sift = ["data", "sem", "geo", "fc7", "score_sem", "loss", "score_geo", "loss_geo"]
    assert score_heads(sift) == [("score_sem", "sem", True), ("score_geo", "geo", False)]
    with pytest.raises(ValueError, match="no score blob to score.*blobs: data, prob"):
        score_heads(["data", "prob"])
