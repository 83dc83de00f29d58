"""Loading the real-Caffe reference cases under ``tests/fixtures/caffe_reference`` for the tests."""
from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "fixtures", "caffe_reference")


def case_names(section: str, index: str = "index.json") -> List[str]:
    """The cases a section's index lists: ``index.json`` (the original cases) or ``index_ext.json`` (the
    extension: every other BVLC layer type, other losses)."""
    with open(os.path.join(ROOT, section, index)) as f:
        return [entry["name"] for entry in json.load(f)]


def _npz(path: str) -> Optional[Dict[str, np.ndarray]]:
    if not os.path.exists(path):
        return None
    with np.load(path) as archive:
        return {k: archive[k] for k in archive.files}


@dataclass
class Case:
    """One net real Caffe ran: its prototxt, weights, inputs and every blob it produced."""
    section: str
    name: str

    @property
    def folder(self) -> str:
        return os.path.join(ROOT, self.section, self.name)

    def path(self, filename: str) -> str:
        return os.path.join(self.folder, filename)

    @cached_property
    def meta(self) -> dict:
        with open(self.path("meta.json")) as f:
            return json.load(f)

    @property
    def prototxt(self) -> str:
        return self.path("net.prototxt")

    @property
    def phase(self) -> int:
        return 0 if self.meta["phase"] == "TRAIN" else 1

    def caffemodel_bytes(self) -> bytes:
        if os.path.exists(self.path("net.caffemodel")):
            with open(self.path("net.caffemodel"), "rb") as f:
                return f.read()
        with open(self.path("net.caffemodel.gz"), "rb") as f:
            return gzip.decompress(f.read())

    def arrays(self, kind: str) -> Optional[Dict[str, np.ndarray]]:
        """``inputs``, ``params``, ``forward``, ``diffs``, ``param_diffs`` or ``params_after_forward``."""
        return _npz(self.path(f"{kind}.npz"))

    @property
    def tolerance(self) -> float:
        """Relative to the blob's max-abs: summation-order noise in the big FCN nets is larger."""
        return 1e-4 if self.section == "fcn" else 1e-5


def prepared_net(case: Case, net_param: Optional[Any] = None) -> Any:
    """A runner Net of the case (or of ``net_param``, a variant of its prototxt) with the case's weights and
    inputs set through the pycaffe API, as the fixture generator set them; an Input blob whose shape
    differs from the input's is reshaped first, as the generator did for Filter's target."""
    from runner.net import Net
    net = Net(net_param if net_param is not None else case.prototxt, case.phase)
    for key, value in case.arrays("params").items():
        layer, index = key.rsplit("/", 1)
        net.params[layer][int(index)].data[...] = value
    for name, value in case.arrays("inputs").items():
        if net.blobs[name].shape != value.shape:
            net.blobs[name].reshape(*value.shape)
        net.blobs[name].data[...] = value
    return net


def assert_close(got: np.ndarray, want: np.ndarray, rel: float, what: str) -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape == () and want.shape == (1,):
        want = want.reshape(())  # the fixtures' .npz stored Caffe's 0-d blobs (losses) as (1,); meta says ()
    assert got.shape == want.shape, f"{what}: shape {got.shape} != Caffe's {want.shape}"
    if want.size == 0:
        return
    bound = rel * float(np.max(np.abs(want))) + 1e-6
    err = float(np.max(np.abs(got - want)))
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g}"
