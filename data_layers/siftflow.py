"""SIFT Flow: outdoor scenes with two labelings at once, 33 semantic and 3 geometric classes.

On disk both are .mat files with variable ``S``: semantic 0 = void and 1..33 classes; geometric -1 (or
0) = void and 1..3 classes. The release shifted both down by one so that void lands on 255.
"""
from pathlib import Path

import numpy as np

from data_layers import classes
from data_layers.base import SegDataLayer
from data_layers.layout import SIFTFLOW_SUBSET
from data_layers.readers import read_mat, read_rgb
from data_layers.transforms import class_labels, image_blob

SIFTFLOW_MEAN_BGR = (114.578, 115.294, 108.353)


class SIFTFlowSegDataLayer(SegDataLayer):
    """Tops ``data``, ``sem`` (0..32, 255 void), ``geo`` (0..2, 255 void); ``siftflow_dir`` is the dataset."""

    kind = "siftflow"
    dataset = "SIFT Flow"
    how_to_get = ("Download http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip "
                  "and add the release's trainval.txt and test.txt.")
    dir_keys = ("siftflow_dir",)
    tops = ("data", "sem", "geo")
    default_mean = SIFTFLOW_MEAN_BGR


    def split_file(self) -> Path:
        return self.root / f"{self.split}.txt"

    def source(self, top: str, sample_id: str) -> Path:
        folder, suffix = {"data": ("Images", ".jpg"), "sem": ("SemanticLabels", ".mat"),
                          "geo": ("GeoLabels", ".mat")}[top]
        return self.root / folder / SIFTFLOW_SUBSET / f"{sample_id}{suffix}"

    def decode(self, top: str, path: Path) -> np.ndarray:
        if top == "data":
            return image_blob(read_rgb(path), self.mean)
        if top == "sem":
            return class_labels(read_mat(path, "S"), len(classes.SIFTFLOW), path, shift=1, void=(0,))
        return class_labels(read_mat(path, "S"), len(classes.SIFTFLOW_GEOMETRIC), path, shift=1,
                            void=(-1, 0))
