"""The synthetic datasets are byte-level real formats, reproducible, learnable, and reward fine strides."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image
from scipy.ndimage import uniform_filter

from data_layers import classes
from data_layers.encoders import voc_palette
from data_layers.layout import KINDS, SIFTFLOW_SUBSET
from data_layers.synthetic import MARKER, RECIPES, SPLITS, scenes, write_dataset
from data_layers.transforms import VOID

RELEASE_SPLITS = {"voc": ("train", "val", "seg11valid"), "sbd": ("train", "val"),
                  "nyud": ("trainval", "test"), "siftflow": ("trainval", "test"), "context": ("train", "val")}
N, SIZE = 2, (24, 32)


def _split_ids(path: Path) -> List[str]:
    return path.read_text().split()


@pytest.mark.parametrize("kind", KINDS)
def test_release_layout_and_split_names(kind: str, tmp_path: Path) -> None:
    params = write_dataset(kind, tmp_path, n=N, size=SIZE)
    assert SPLITS[kind] == RELEASE_SPLITS[kind]
    assert all(Path(folder).is_dir() and Path(folder).is_relative_to(tmp_path) for folder in params.values())
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file() and p.name != MARKER)
    per_sample = {"voc": 2, "sbd": 2, "nyud": 4, "siftflow": 3, "context": 2}[kind]
    lists = [f for f in files if f.endswith(".txt") and "labels" not in f]
    assert sorted(Path(f).stem for f in lists) == sorted(RELEASE_SPLITS[kind])
    own_splits = 2  # VOC's seg11valid lists val's pictures
    assert len(files) == len(lists) + own_splits * N * per_sample + (3 if kind == "context" else 0)


def test_voc_files(tmp_path: Path) -> None:
    root = Path(write_dataset("voc", tmp_path, n=N, size=SIZE)["voc_dir"])
    ids = _split_ids(root / "ImageSets/Segmentation/val.txt")
    assert _split_ids(root / "ImageSets/Segmentation/seg11valid.txt") == ids
    assert Image.open(root / "JPEGImages" / f"{ids[0]}.jpg").format == "JPEG"
    label = Image.open(root / "SegmentationClass" / f"{ids[0]}.png")
    assert label.format == "PNG" and label.mode == "P" and label.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    assert label.getpalette() == voc_palette()
    values = set(np.unique(np.asarray(label)))
    assert values <= set(range(21)) | {VOID} and VOID in values  # VOC outlines objects with void


def test_sbd_files(tmp_path: Path) -> None:
    root = Path(write_dataset("sbd", tmp_path, n=N, size=SIZE)["sbdd_dir"])
    sample = _split_ids(root / "train.txt")[0]
    assert Image.open(root / "img" / f"{sample}.jpg").format == "JPEG"
    gt = scipy.io.loadmat(str(root / "cls" / f"{sample}.mat"))["GTcls"]
    assert gt.shape == (1, 1) and set(gt.dtype.names) == {"Segmentation", "Boundaries", "CategoriesPresent"}
    segmentation = gt[0]["Segmentation"][0]  # the release's access path
    assert segmentation.dtype == np.uint8 and segmentation.max() < 21
    boundaries = gt[0]["Boundaries"][0]
    assert boundaries.shape == (20, 1) and all(scipy.sparse.issparse(b) for b in boundaries.ravel())
    present = gt[0]["CategoriesPresent"][0].ravel().tolist()
    assert present == [c for c in np.unique(segmentation).tolist() if c > 0]


def test_nyud_files(tmp_path: Path) -> None:
    root = Path(write_dataset("nyud", tmp_path, n=N, size=SIZE)["nyud_dir"])
    sample = _split_ids(root / "test.txt")[0]
    assert sample.isdigit()
    color, hha = (Image.open(root / "data" / d / f"img_{sample}.png") for d in ("images", "hha"))
    assert color.mode == hha.mode == "RGB" and color.size == (SIZE[1], SIZE[0])
    depth = Image.open(root / "data" / "depth" / f"img_{sample}.png")
    assert depth.format == "PNG" and depth.mode == "I;16" and np.asarray(depth).min() > 0
    segmentation = scipy.io.loadmat(str(root / "segmentation" / f"img_{sample}.mat"))["segmentation"]
    assert segmentation.dtype == np.uint8 and segmentation.max() <= 40


def test_siftflow_files(tmp_path: Path) -> None:
    root = Path(write_dataset("siftflow", tmp_path, n=N, size=SIZE)["siftflow_dir"])
    sample = _split_ids(root / "trainval.txt")[0]
    assert sample.split("_")[0] in ("coast", "forest", "highway", "insidecity", "mountain", "opencountry",
                                    "street", "tallbuilding")
    assert Image.open(root / "Images" / SIFTFLOW_SUBSET / f"{sample}.jpg").format == "JPEG"
    sem = scipy.io.loadmat(str(root / "SemanticLabels" / SIFTFLOW_SUBSET / f"{sample}.mat"))
    geo = scipy.io.loadmat(str(root / "GeoLabels" / SIFTFLOW_SUBSET / f"{sample}.mat"))
    assert sem["S"].shape == geo["S"].shape == SIZE
    assert set(np.unique(sem["S"])) <= set(range(34)) and set(np.unique(geo["S"])) <= {-1, 1, 2, 3}
    assert [str(n[0][0]) for n in sem["names"]] == list(classes.SIFTFLOW)
    sky = sem["S"] == classes.SIFTFLOW.index("sky") + 1
    assert np.all(geo["S"][sky] == 1) and np.all((geo["S"] == -1) == (sem["S"] == 0))


def test_context_files(tmp_path: Path) -> None:
    params = write_dataset("context", tmp_path, n=N, size=SIZE)
    voc2010, context = Path(params["voc_dir"]) / "VOC2010", Path(params["context_dir"])
    sample = _split_ids(voc2010 / "ImageSets/Main/train.txt")[0]
    assert Image.open(voc2010 / "JPEGImages" / f"{sample}.jpg").format == "JPEG"
    full = (context / "labels.txt").read_text().splitlines()
    task = (context / "59_labels.txt").read_text().splitlines()
    assert full[0].startswith("1: ") and "air conditioner" in " ".join(full) and "table" in " ".join(full)
    assert task[0] == "1: aeroplane" and len(task) == 59 and "11: diningtable" in task
    assert len((context / "33_labels.txt").read_text().splitlines()) == 33
    label_map = scipy.io.loadmat(str(context / "trainval" / f"{sample}.mat"))["LabelMap"]
    assert label_map.dtype == np.uint16 and 1 <= label_map.min() and label_map.max() <= len(full)


def test_same_seed_same_bytes_other_seed_other_pictures(tmp_path: Path) -> None:
    def contents(root: Path) -> Dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    for kind in KINDS:
        write_dataset(kind, tmp_path / "a", n=N, size=SIZE, seed=7)
        write_dataset(kind, tmp_path / "b", n=N, size=SIZE, seed=7)
        write_dataset(kind, tmp_path / "c", n=N, size=SIZE, seed=8)
    a, b, c = (contents(tmp_path / x) for x in "abc")
    assert a == b
    pictures = [name for name in a if name.endswith(".jpg")]
    assert pictures and all(a[name] != c[name] for name in pictures)


def test_picture_sizes(tmp_path: Path) -> None:
    for kind in KINDS:
        shapes = {s.label.shape for _, s in scenes(kind, SPLITS[kind][0], 6, (40, 48), 0)}
        if RECIPES[kind].jitter_size:  # VOC-like: varying, never larger than asked, at least 3/4 of it
            assert len(shapes) > 1 and all(30 <= h <= 40 and 36 <= w <= 48 for h, w in shapes)
        else:
            assert shapes == {(40, 48)}


def _coarse(label: np.ndarray, stride: int) -> np.ndarray:
    """The best a net predicting one label per ``stride`` cell can do: each cell's centre label."""
    h, w = label.shape
    rows = np.minimum(np.arange(h) // stride * stride + stride // 2, h - 1)
    cols = np.minimum(np.arange(w) // stride * stride + stride // 2, w - 1)
    return label[np.ix_(rows, cols)]


def _mean_iu(predictions: List[np.ndarray], labels: List[np.ndarray], n: int) -> float:
    hist = np.zeros((n, n))
    for prediction, label in zip(predictions, labels):
        keep = label != VOID
        hist += np.bincount(n * label[keep].astype(int) + prediction[keep], minlength=n * n).reshape(n, n)
    with np.errstate(invalid="ignore"):
        iu = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    return float(np.nanmean(iu))


@pytest.mark.parametrize("kind", ["voc", "nyud", "siftflow", "context"])
def test_finer_output_strides_measurably_help(kind: str) -> None:
    labels = [s.label for _, s in scenes(kind, SPLITS[kind][0], 8, (96, 96), 0)]
    n = RECIPES[kind].num_classes
    iu = {stride: _mean_iu([_coarse(np.where(l == VOID, 0, l), stride) for l in labels], labels, n)
          for stride in (32, 16, 8)}
    assert iu[16] > iu[32] + 0.05 and iu[8] > iu[16] + 0.05, iu


def _features(rgb: np.ndarray) -> np.ndarray:
    """Colour and 5x5 local mean and contrast: the least a convnet's first layers see."""
    pixels = rgb.astype(np.float64)
    local = uniform_filter(pixels, (5, 5, 1))
    contrast = np.sqrt(np.maximum(uniform_filter(pixels ** 2, (5, 5, 1)) - local ** 2, 0.0))
    return np.concatenate([pixels, local, contrast], axis=-1)


@pytest.mark.parametrize("kind", ["siftflow", "context"])
def test_classes_are_learnable_across_splits(kind: str) -> None:
    """Class means fitted on the training split classify held-out pixels far above the majority class."""
    def pixels(split: str):
        items = scenes(kind, split, 8, (64, 64), 0)
        keep = [s.label != VOID for _, s in items]
        x = np.concatenate([_features(s.rgb)[k] for (_, s), k in zip(items, keep)])
        return x, np.concatenate([s.label[k] for (_, s), k in zip(items, keep)])

    x, y = pixels(SPLITS[kind][0])
    x_test, y_test = pixels(SPLITS[kind][-1])
    seen = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in seen])
    nearest = seen[np.argmin(((x_test[:, None, :] - means[None]) ** 2).sum(-1), axis=1)]
    majority = np.bincount(y_test).max() / len(y_test)
    assert (nearest == y_test).mean() > majority + 0.2


def test_write_dataset_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset kind 'kitti'.*voc, sbd, nyud, siftflow, context"):
        write_dataset("kitti", tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        write_dataset("voc", tmp_path, n=0)
    with pytest.raises(ValueError, match="at least 8x8"):
        write_dataset("voc", tmp_path, size=(4, 64))
    with pytest.raises(ValueError, match="splits train, val"):
        scenes("sbd", "seg11valid", 1)
