"""NYUDv2 in the FCN release's layout: RGB, depth and HHA images, and the 40-class labels of Gupta et al.

Which inputs a net sees is the experiment (color, depth, HHA, late fusion), so the tops are chosen in
``param_str``: ``tops`` lists any of color, depth, hha, label in the order of the layer's top blobs.
"""
from pathlib import Path
from typing import Any, Dict

import numpy as np

from data_layers import classes
from data_layers.base import SegDataLayer
from data_layers.readers import read_mat, read_png16, read_rgb
from data_layers.transforms import class_labels, image_blob, log_depth_blob

NYUD_MEAN_BGR = (116.190, 97.203, 92.318)
NYUD_MEAN_HHA = np.array((132.431, 94.076, 118.477))  # in the HHA PNG's own channel order
NYUD_MEAN_LOG_DEPTH = 7.844
NYUD_TOPS = ("color", "depth", "hha", "label")


class NYUDSegDataLayer(SegDataLayer):
    """``nyud_dir`` holds <split>.txt, data/{images,depth,hha}/img_<id>.png, segmentation/img_<id>.mat."""

    kind = "nyud"
    dataset = "NYUDv2"
    how_to_get = "Download it in the release's layout from http://dl.caffe.berkeleyvision.org/nyud.tar.gz."
    dir_keys = ("nyud_dir",)
    extra_keys = ("tops",)
    tops = NYUD_TOPS
    default_mean = NYUD_MEAN_BGR

    def configure(self, params: Dict[str, Any]) -> None:
        tops = params.get("tops", NYUD_TOPS)
        if isinstance(tops, str) or not tops or any(t not in NYUD_TOPS for t in tops):
            raise ValueError(f"NYUDSegDataLayer: tops must be a list of {', '.join(NYUD_TOPS)}, got {tops!r}")
        self.tops = tuple(tops)


    def split_file(self) -> Path:
        return self.root / f"{self.split}.txt"

    def source(self, top: str, sample_id: str) -> Path:
        if top == "label":
            return self.root / "segmentation" / f"img_{sample_id}.mat"
        folder = {"color": "images", "depth": "depth", "hha": "hha"}[top]
        return self.root / "data" / folder / f"img_{sample_id}.png"

    def decode(self, top: str, path: Path) -> np.ndarray:
        if top == "color":
            return image_blob(read_rgb(path), self.mean)
        if top == "hha":
            return image_blob(read_rgb(path), NYUD_MEAN_HHA, to_bgr=False)
        if top == "depth":
            return log_depth_blob(read_png16(path), NYUD_MEAN_LOG_DEPTH, path)
        # 0 is unlabeled on disk: it becomes void, and classes 1..40 become 0..39.
        return class_labels(read_mat(path, "segmentation"), len(classes.NYUD), path, shift=1, void=(0,))
