"""Where each dataset lives under a data root, in the layout of the FCN release's ``data/`` folder.

One table, so that ``fcn synth`` writes exactly where the released nets' prototxts (and ``fcn bench``)
look, and the layers' folder keys can be filled in from a single data root.
"""
from pathlib import Path
from typing import Dict, Union

# SIFT Flow keeps images and labels in one subfolder named after its source collection.
SIFTFLOW_SUBSET = "spatial_envelope_256x256_static_8outdoorcategories"

KINDS = ("voc", "sbd", "nyud", "siftflow", "context")

_FOLDERS = {
    "voc": {"voc_dir": "pascal/VOC2011"},
    "sbd": {"sbdd_dir": "sbdd/dataset"},
    "nyud": {"nyud_dir": "nyud"},
    "siftflow": {"siftflow_dir": "sift-flow"},
    "context": {"voc_dir": "pascal", "context_dir": "pascal-context"},
}


def dataset_params(kind: str, data_root: Union[str, Path]) -> Dict[str, str]:
    """The layer's folder keys (e.g. ``{'voc_dir': '<root>/pascal/VOC2011'}``) for a data root."""
    if kind not in _FOLDERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    return {key: str(Path(data_root) / sub) for key, sub in _FOLDERS[kind].items()}
