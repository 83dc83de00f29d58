"""The FCN data layers read every format back exactly, in the promised order, and fail clearly.

Each test writes a tiny synthetic dataset with ``data_layers.synthetic`` into tmp_path and drives a layer
through Caffe's protocol (setup, then reshape + forward per image) with real Blobs.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
from PIL import Image

from data_layers.catalog import LAYERS, open_layer
from data_layers.encoders import save_jpeg, save_mat, save_palette_png, save_png, save_sbd_cls
from data_layers.errors import BadSampleError, DatasetNotFoundError
from data_layers.layout import KINDS
from data_layers.nyud import NYUD_MEAN_HHA, NYUD_MEAN_LOG_DEPTH
from data_layers.synthetic import SPLITS, scenes, write_dataset
from data_layers.voc import VOCSegDataLayer
from malformed import png_header_only
from netspec import caffe_pb2
from runner.blob import Blob
from runner.python_layer import PythonLayerHost, instantiate

N, SIZE, SEED = 3, (24, 32), 5
IMAGE_TOP = {"nyud": "color"}
LABEL_TOP = {"siftflow": "sem"}
# JPEG at quality 95 on these noisy textures: mean absolute error ~2.9 (worst image 3.2), worst pixel 23.
JPEG_MEAN_TOL, JPEG_MAX_TOL = 4.0, 32.0


def _write(kind: str, root: Path) -> Dict[str, str]:
    return write_dataset(kind, root, n=N, size=SIZE, seed=SEED)


def _read(kind: str, params: Dict[str, Any], count: int) -> List[Dict[str, Any]]:
    """``count`` forwards of a fresh layer: each top's data (copied) and the sample id."""
    layer, tops = open_layer(kind, params)
    out = []
    for _ in range(count):
        layer.reshape([], tops)
        layer.forward([], tops)
        out.append(dict({name: blob.data.copy() for name, blob in zip(layer.tops, tops)}, id=layer.sample_id))
    layer.close()
    return out


def _ids(outputs: List[Dict[str, Any]]) -> List[str]:
    return [o["id"] for o in outputs]


# ----- round trip: what the writer wrote is what the layer delivers -----
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prefetch", [0, 2])
def test_round_trip_every_split(kind: str, prefetch: int, tmp_path: Path) -> None:
    params = _write(kind, tmp_path)
    for split in SPLITS[kind]:
        expected = scenes(kind, split, N, SIZE, SEED)
        got = _read(kind, dict(params, split=split, randomize=False, prefetch=prefetch), N)
        assert _ids(got) == [sample_id for sample_id, _ in expected]
        layer, _ = open_layer(kind, dict(params, split=split, prefetch=0))
        for out, (sample_id, scene) in zip(got, expected):
            _check_sample(kind, layer, out, sample_id, scene)


def _caffe_image(pixels: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The release's preprocessing written out longhand: float, RGB->BGR, minus mean, HWC->CHW."""
    return (pixels[:, :, ::-1].astype(np.float64) - mean).astype(np.float32).transpose(2, 0, 1)[None]


def _check_sample(kind: str, layer: Any, out: Dict[str, Any], sample_id: str, scene: Any) -> None:
    image_top, label_top = IMAGE_TOP.get(kind, "data"), LABEL_TOP.get(kind, "label")
    image = out[image_top]
    assert image.dtype == np.float32 and image.shape == (1, 3) + scene.label.shape
    # exact against the file as decoded, within JPEG tolerance against the pixels written
    decoded = np.asarray(Image.open(layer.source(image_top, sample_id)).convert("RGB"))
    np.testing.assert_array_equal(image, _caffe_image(decoded, layer.mean))
    error = np.abs(image - _caffe_image(scene.rgb, layer.mean))
    assert error.mean() < JPEG_MEAN_TOL and error.max() < JPEG_MAX_TOL
    np.testing.assert_array_equal(out[label_top], scene.label[None, None].astype(np.float32))
    if kind == "siftflow":
        np.testing.assert_array_equal(out["geo"], scene.geo[None, None].astype(np.float32))
    if kind == "nyud":
        np.testing.assert_array_equal(image, _caffe_image(scene.rgb, layer.mean))  # PNG: lossless
        logd = np.log(scene.depth.astype(np.float32)) - np.float32(NYUD_MEAN_LOG_DEPTH)
        np.testing.assert_allclose(out["depth"], logd[None, None], rtol=1e-6, atol=1e-6)
        hha = (scene.hha.astype(np.float64) - NYUD_MEAN_HHA).astype(np.float32).transpose(2, 0, 1)
        np.testing.assert_array_equal(out["hha"], hha[None])


def test_context_33_class_task_maps_other_classes_to_background(tmp_path: Path) -> None:
    params = _write("context", tmp_path)
    got = _read("context", dict(params, split="val", classes=33), N)
    for out, (_, scene) in zip(got, scenes("context", "val", N, SIZE, SEED)):
        expected = np.where(scene.label <= 33, scene.label, 0)
        np.testing.assert_array_equal(out["label"][0, 0], expected)


def test_nyud_tops_are_chosen_in_param_str(tmp_path: Path) -> None:
    params = _write("nyud", tmp_path)
    got = _read("nyud", dict(params, split="test", tops=["hha", "label"]), 1)[0]
    assert got["hha"].shape[1] == 3 and got["label"].shape[1] == 1 and "color" not in got


def test_tops_follow_each_image_size(tmp_path: Path) -> None:
    params = write_dataset("voc", tmp_path, n=4, size=(40, 48), seed=1)
    got = _read("voc", dict(params, split="val"), 4)
    sizes = [o["data"].shape[2:] for o in got]
    assert sizes == [s.label.shape for _, s in scenes("voc", "val", 4, (40, 48), 1)]
    assert len(set(sizes)) > 1 and all(o["label"].shape[2:] == o["data"].shape[2:] for o in got)


def test_runs_under_the_python_layer_host(tmp_path: Path) -> None:
    params = _write("sbd", tmp_path)
    lp = caffe_pb2.LayerParameter(name="data", type="Python")
    lp.python_param.module, lp.python_param.layer = "data_layers.voc", "SBDDSegDataLayer"
    lp.python_param.param_str = repr(dict(params, split="val"))
    tops = [Blob(), Blob()]
    host = PythonLayerHost(instantiate(lp, phase=1), [], tops)
    host.setup()
    host.run_forward()
    _, scene = scenes("sbd", "val", N, SIZE, SEED)[0]
    np.testing.assert_array_equal(tops[1].data[0, 0], scene.label)


# ----- order: file order for evaluation, seeded shuffles for training, shards -----
@pytest.fixture(scope="module")
def voc6(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    return write_dataset("voc", tmp_path_factory.mktemp("voc6"), n=6, size=(16, 16), seed=0)


def test_evaluation_cycles_in_file_order(voc6: Dict[str, str]) -> None:
    ids = [s for s, _ in scenes("voc", "seg11valid", 6, (16, 16), 0)]
    assert _ids(_read("voc", dict(voc6, split="seg11valid", seed=3), 8)) == ids + ids[:2]


def test_training_order_is_seeded_and_visits_each_sample_once_per_epoch(voc6: Dict[str, str]) -> None:
    ids = [s for s, _ in scenes("voc", "train", 6, (16, 16), 0)]
    first = _ids(_read("voc", dict(voc6, split="train", seed=1), 12))
    assert first == _ids(_read("voc", dict(voc6, split="train", seed=1, prefetch=0), 12))
    assert sorted(first[:6]) == sorted(ids) and sorted(first[6:]) == sorted(ids)
    assert first[:6] != ids and first[:6] != first[6:]
    assert first != _ids(_read("voc", dict(voc6, split="train", seed=2), 12))
    assert _ids(_read("voc", dict(voc6, split="train", randomize=False), 6)) == ids


def test_shards_split_the_data_between_ranks(voc6: Dict[str, str]) -> None:
    shards = [_ids(_read("voc", dict(voc6, split="val", rank=r, world_size=3), 2)) for r in range(3)]
    flat = [i for shard in shards for i in shard]
    assert sorted(flat) == sorted(s for s, _ in scenes("voc", "val", 6, (16, 16), 0))
    with pytest.raises(ValueError, match="rank"):
        open_layer("voc", dict(voc6, split="val", rank=2, world_size=2))
    with pytest.raises(ValueError, match="too few"):
        open_layer("voc", dict(voc6, split="val", rank=0, world_size=7))


# ----- param_str -----
@pytest.mark.parametrize("param_str, message", [
    ("__import__('os').getcwd()", "literal"),
    ("['voc_dir', 'split']", "dict"),
    ("dict(split='val')", "literal"),
    ("{'split': 'val'}", "lacks voc_dir"),
    ("{'split': 'val', 'voc_dir': '.', 'speed': 3}", "unknown param_str key"),
    ("{'split': 'val', 'voc_dir': '.', 'mean': (1, 2)}", "mean must be 3 finite"),
])
def test_param_str_is_a_checked_literal(param_str: str, message: str) -> None:
    layer = VOCSegDataLayer()
    layer.param_str = param_str
    with pytest.raises(ValueError, match=message):
        layer.setup([], [Blob(), Blob()])


def test_top_and_bottom_counts_are_checked(voc6: Dict[str, str]) -> None:
    layer = VOCSegDataLayer()
    layer.param_str = repr(dict(voc6, split="val"))
    with pytest.raises(ValueError, match="needs 2 tops"):
        layer.setup([], [Blob()])
    with pytest.raises(ValueError, match="no bottoms"):
        layer.setup([Blob()], [Blob(), Blob()])


# ----- prefetch -----
class SlowVOC(VOCSegDataLayer):
    """A VOC layer whose decoding takes a known time, and which records the thread it ran on."""

    delay = 0.02

    def decode(self, top: str, path: Path) -> np.ndarray:
        self.threads = getattr(self, "threads", set()) | {threading.current_thread().name}
        time.sleep(self.delay)
        return super().decode(top, path)


def _steps_waited(params: Dict[str, Any], steps: int, net_seconds: float) -> SlowVOC:
    layer = SlowVOC()
    layer.param_str = repr(params)
    tops = [Blob(), Blob()]
    layer.setup([], tops)
    for _ in range(steps):
        layer.reshape([], tops)
        layer.forward([], tops)
        time.sleep(net_seconds)
    layer.close()
    return layer


def test_prefetch_hides_decoding_and_the_wait_is_measured(voc6: Dict[str, str]) -> None:
    inline = _steps_waited(dict(voc6, split="val", prefetch=0), 6, 0.06)
    ahead = _steps_waited(dict(voc6, split="val", prefetch=3, workers=2), 6, 0.06)
    assert inline.wait_seconds >= 6 * 2 * SlowVOC.delay  # two tops decoded per step, all waited for
    assert ahead.wait_seconds < 0.5 * inline.wait_seconds
    # Even without read-ahead the read runs on a worker thread, so that a stop request can abandon it.
    assert all(name.startswith("data-prefetch") for name in inline.threads | ahead.threads)


# ----- bad input, for every format -----
def _bad_label(kind: str, path: Path, shape: tuple) -> None:
    """A label file in ``kind``'s own encoding holding a value outside its task."""
    if kind == "voc":
        save_palette_png(path, np.full(shape, 21, np.uint8))
    elif kind == "sbd":
        save_sbd_cls(path, np.full(shape, 30, np.uint8))
    elif kind == "nyud":
        save_mat(path, segmentation=np.full(shape, 41, np.uint8))
    elif kind == "siftflow":
        save_mat(path, S=np.full(shape, 34.0), names=np.array(["x"], dtype=object))
    else:
        save_mat(path, LabelMap=np.full(shape, 999, np.uint16))


def _resized_image(kind: str, path: Path, shape: tuple) -> None:
    pixels = np.full(shape + (3,), 128, np.uint8)
    (save_png if kind == "nyud" else save_jpeg)(path, pixels)


def _first(kind: str, root: Path, **extra: Any):
    """Dataset written, params for its eval split (NYUD: color and label tops only), and a probe layer
    (nothing loaded) to find file paths; plus the first sample's id."""
    params = dict(_write(kind, root), split=SPLITS[kind][-1], **extra)
    if kind == "nyud":
        params["tops"] = ["color", "label"]
    probe, _ = open_layer(kind, dict(params, prefetch=0))
    return params, probe, probe.ids[0]


def _first_sample_error(kind: str, params: Dict[str, Any]) -> BadSampleError:
    with pytest.raises(BadSampleError) as caught:
        _read(kind, params, 1)
    return caught.value


@pytest.mark.parametrize("kind", KINDS)
def test_missing_dataset_folder_says_where_and_how(kind: str, tmp_path: Path) -> None:
    params = _write(kind, tmp_path / "data")
    missing = {key: str(tmp_path / "nowhere" / key) for key in params}
    with pytest.raises(DatasetNotFoundError) as caught:
        open_layer(kind, dict(missing, split=SPLITS[kind][0]))
    assert str(tmp_path / "nowhere") in str(caught.value) and f"fcn synth {kind} --out" in str(caught.value)
    assert "http" in str(caught.value)
    with pytest.raises(DatasetNotFoundError, match=r"no split 'trainvall' \(.*trainvall\.txt is missing\); its splits: ") \
            as caught:
        open_layer(kind, dict(params, split="trainvall"))
    assert all(split in str(caught.value) for split in SPLITS[kind])


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_image_names_the_file_or_is_skipped_and_counted(kind: str, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    params, probe, first = _first(kind, tmp_path)
    image = probe.source(IMAGE_TOP.get(kind, "data"), first)
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 3])
    error = _first_sample_error(kind, params)
    assert error.path == str(image) and str(image) in str(error)

    layer, tops = open_layer(kind, dict(params, skip_bad=True))
    layer.reshape([], tops)
    layer.forward([], tops)
    assert layer.sample_id == probe.ids[1] and layer.skipped == 1 and list(layer.bad_samples) == [str(image)]
    assert "skipped bad sample (1 so far)" in caplog.text and str(image) in caplog.text


@pytest.mark.parametrize("side", [12000, 20000])  # 144 MP: over our limit only; 400 MP: over PIL's bomb guard too
def test_a_picture_declaring_too_many_pixels_is_refused_before_decoding_and_skippable(side: int,
                                                                                       tmp_path: Path) -> None:
    params, probe, first = _first("voc", tmp_path)
    image = probe.source("data", first)
    image.write_bytes(png_header_only(side, side))
    error = _first_sample_error("voc", params)
    assert error.path == str(image) and ("more than the limit" in str(error) or "decompression bomb" in str(error))
    layer, tops = open_layer("voc", dict(params, skip_bad=True))
    layer.reshape([], tops)
    layer.forward([], tops)
    assert layer.skipped == 1 and list(layer.bad_samples) == [str(image)]


@pytest.mark.parametrize("kind", KINDS)
def test_label_outside_the_classes_names_the_file(kind: str, tmp_path: Path) -> None:
    params, probe, first = _first(kind, tmp_path)
    label = probe.source(LABEL_TOP.get(kind, "label"), first)
    _bad_label(kind, label, scenes(kind, params["split"], N, SIZE, SEED)[0][1].label.shape)
    error = _first_sample_error(kind, params)
    assert error.path == str(label)
    assert "outside the task" in str(error) or "not in the label list" in str(error)


@pytest.mark.parametrize("kind", KINDS)
def test_image_label_size_mismatch_names_both_files(kind: str, tmp_path: Path) -> None:
    params, probe, first = _first(kind, tmp_path)
    image_top = IMAGE_TOP.get(kind, "data")
    image = probe.source(image_top, first)
    h, w = scenes(kind, params["split"], N, SIZE, SEED)[0][1].label.shape
    _resized_image(kind, image, (h + 3, w))
    error = _first_sample_error(kind, params)
    assert str(image) in str(error) and str(probe.source(LABEL_TOP.get(kind, "label"), first)) in str(error)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "voc"])
def test_garbage_mat_file_names_the_file(kind: str, tmp_path: Path) -> None:
    params, probe, first = _first(kind, tmp_path)
    label = probe.source(LABEL_TOP.get(kind, "label"), first)
    label.write_bytes(b"MATLAB 5.0 MAT-file, but not really" * 4)
    assert _first_sample_error(kind, params).path == str(label)


def test_a_split_of_only_bad_samples_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    params, probe, _ = _first("voc", tmp_path, skip_bad=True)
    for sample_id in probe.ids:
        probe.source("label", sample_id).unlink()
    with pytest.raises(BadSampleError, match="every sample"):
        _read("voc", params, 1)


def test_every_layer_kind_is_catalogued() -> None:
    assert set(LAYERS) == set(KINDS) == set(SPLITS)
