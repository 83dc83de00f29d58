"""Where each experiment's nets read data: the data_layers Python layers, called as the release's nets
call theirs (same class names, same param_str keys and values).

Dataset paths default to ``../../data/...``: the repo's ``data/`` folder (DESIGN.md's layout) seen from
an experiment's folder (models/<experiment>/), where its solver runs. The release's folders sat one
level higher, so most of its nets said ``../data``; either way paths are relative to the solver's folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from netspec.net_spec import L, NetSpec

__all__ = ["DATA_ROOT", "Source", "nyud", "pascalcontext", "siftflow", "voc"]

DATA_ROOT = "../../data"
SEED = 1337
# BGR means the release's VOC nets pass (the data layer's default is the same, to more digits).
VOC_MEAN = (104.00699, 116.66877, 122.67892)

# (split, data root) -> the data layer's class name and its param_str dict
Describe = Callable[[str, str], tuple[str, dict[str, Any]]]


@dataclass(frozen=True)
class Source:
    """A dataset as nets see it.

    ``tops`` are the data layer's blob names; ``inputs`` the deploy net's inputs (blob: shape),
    the tops that are not labels; ``splits`` maps each prototxt's stem to the split it reads;
    ``describe(split, data_root)`` gives the layer class and its param_str dict.
    """

    module: str
    tops: tuple[str, ...]
    inputs: Mapping[str, tuple[int, ...]]
    splits: Mapping[str, str]
    describe: Describe

    def data_layer(self, n: NetSpec, split: str, data_root: str = DATA_ROOT) -> None:
        """Add the Python data layer reading ``split`` to ``n``, its tops named ``tops``."""
        layer, params = self.describe(split, data_root)
        tops = L.Python(module=self.module, layer=layer, ntop=len(self.tops),
                        param_str=str(params))
        for name, top in zip(self.tops, tops):
            n[name] = top


def _voc(split: str, root: str) -> tuple[str, dict[str, Any]]:
    """SBD's train split for training, VOC2011's seg11valid for validation (the paper's footnote 7)."""
    params: dict[str, Any] = dict(split=split, mean=VOC_MEAN, seed=SEED)
    if split == "train":
        params["sbdd_dir"] = f"{root}/sbdd/dataset"
        return "SBDDSegDataLayer", params
    params["voc_dir"] = f"{root}/pascal/VOC2011"
    return "VOCSegDataLayer", params


def voc() -> Source:
    """PASCAL VOC 2011 (+ SBD): 21 classes; train.prototxt and val.prototxt."""
    return Source("data_layers.voc", ("data", "label"), {"data": (1, 3, 500, 500)},
                  {"train": "train", "val": "seg11valid"}, _voc)


# NYUD's channels per input kind; images are Gupta et al.'s 425 x 560 crops.
_NYUD_CHANNELS = {"color": 3, "depth": 1, "hha": 3}
_NYUD_SIZE = (425, 560)


def nyud(*inputs: str) -> Source:
    """NYUDv2, 40 classes, reading ``inputs`` (color, depth, hha) and the label.

    One input is blob ``data`` (the release's single-stream nets); several keep their kind's
    name (color, depth, hha), as the fusion nets need them apart.
    """
    kinds = list(inputs) + ["label"]
    names = ("data",) if len(inputs) == 1 else inputs

    def describe(split: str, root: str) -> tuple[str, dict[str, Any]]:
        return "NYUDSegDataLayer", dict(nyud_dir=f"{root}/nyud", split=split, tops=kinds, seed=SEED)

    shapes = {name: (1, _NYUD_CHANNELS[kind]) + _NYUD_SIZE for name, kind in zip(names, inputs)}
    return Source("data_layers.nyud", names + ("label",), shapes,
                  {"trainval": "trainval", "test": "test"}, describe)


def _siftflow(split: str, root: str) -> tuple[str, dict[str, Any]]:
    return "SIFTFlowSegDataLayer", dict(siftflow_dir=f"{root}/sift-flow", split=split, seed=SEED)


def siftflow() -> Source:
    """SIFT Flow: 256 x 256 images with semantic (33) and geometric (3) labels."""
    return Source("data_layers.siftflow", ("data", "sem", "geo"), {"data": (1, 3, 256, 256)},
                  {"trainval": "trainval", "test": "test"}, _siftflow)


def _pascalcontext(split: str, root: str) -> tuple[str, dict[str, Any]]:
    return "PASCALContextSegDataLayer", dict(voc_dir=f"{root}/pascal",
                                             context_dir=f"{root}/pascal-context",
                                             split=split, seed=SEED)


def pascalcontext() -> Source:
    """PASCAL-Context's 59-class task on VOC2010 images (60 scores with background)."""
    return Source("data_layers.pascalcontext", ("data", "label"), {"data": (1, 3, 500, 500)},
                  {"train": "train", "val": "val"}, _pascalcontext)
