"""PASCAL VOC and SBD (the Berkeley extended VOC annotations): 20 object classes plus background.

The FCN release trains on SBD ``train`` and validates on VOC ``seg11valid``; both share images, classes
and preprocessing, and differ only in where files live and how labels are stored (palette PNG vs .mat).
"""
from pathlib import Path

import numpy as np

from data_layers import classes
from data_layers.base import SegDataLayer
from data_layers.readers import read_index_png, read_mat, read_rgb
from data_layers.transforms import class_labels, image_blob

# BGR mean of the ILSVRC training images, the release's setting for VGG-based VOC nets.
VOC_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


class _PascalSegLayer(SegDataLayer):
    """Tops ``data`` (JPEG, BGR minus mean) and ``label`` (0..20, 255 void)."""

    default_mean = VOC_MEAN_BGR
    num_classes = len(classes.VOC)
    image_folder = ""
    label_folder = ""
    label_suffix = ""


    def source(self, top: str, sample_id: str) -> Path:
        if top == "data":
            return self.root / self.image_folder / f"{sample_id}.jpg"
        return self.root / self.label_folder / f"{sample_id}{self.label_suffix}"

    def decode(self, top: str, path: Path) -> np.ndarray:
        if top == "data":
            return image_blob(read_rgb(path), self.mean)
        return class_labels(self.read_label(path), self.num_classes, path)

    def read_label(self, path: Path) -> np.ndarray:
        raise NotImplementedError


class VOCSegDataLayer(_PascalSegLayer):
    """PASCAL VOC: ``voc_dir`` is the year folder (e.g. data/pascal/VOC2011); labels are palette PNGs."""

    kind = "voc"
    dataset = "PASCAL VOC"
    how_to_get = ("Download VOC2011/VOC2012 from http://host.robots.ox.ac.uk/pascal/VOC/ and put the "
                  "release's seg11valid.txt into ImageSets/Segmentation/.")
    dir_keys = ("voc_dir",)
    image_folder = "JPEGImages"
    label_folder = "SegmentationClass"
    label_suffix = ".png"

    def split_file(self) -> Path:
        return self.root / "ImageSets" / "Segmentation" / f"{self.split}.txt"

    def read_label(self, path: Path) -> np.ndarray:
        return read_index_png(path)


class SBDDSegDataLayer(_PascalSegLayer):
    """SBD: ``sbdd_dir`` is its ``dataset`` folder; labels are ``GTcls.Segmentation`` in cls/*.mat."""

    kind = "sbd"
    dataset = "SBD (Semantic Boundaries Dataset)"
    how_to_get = "Download it from http://www.cs.berkeley.edu/~bharath2/codes/SBD/download.html."
    dir_keys = ("sbdd_dir",)
    image_folder = "img"
    label_folder = "cls"
    label_suffix = ".mat"

    def split_file(self) -> Path:
        return self.root / f"{self.split}.txt"

    def read_label(self, path: Path) -> np.ndarray:
        return read_mat(path, "GTcls", "Segmentation")
