"""Caffe's HDF5 files: ``.caffemodel.h5`` weights, ``.solverstate.h5`` solver states, HDF5Data/HDF5Output sets.

The layouts are Caffe's own, so files move both ways between real Caffe and this project:

* weights (Net::ToHDF5): group ``data/<layer>`` for every layer of the net, holding one float32 dataset
  ``<i>`` per parameter blob the layer owns (a blob shared from another layer is written only there),
  and with ``snapshot_diff`` a group ``diff/<layer>`` holding every blob's gradient;
* solver state (SGDSolver::SnapshotSolverStateToHDF5): int32 ``iter`` and ``current_step`` of shape (1,),
  ``learned_net`` a scalar null-terminated string, ``history/<i>`` float32;
* data sets (HDF5Data/HDF5Output): one dataset per top name, first axis = rows.

Caffe opens weights as HDF5 when the file carries HDF5's signature (``H5Fis_hdf5``), whatever its name;
``is_hdf5`` tells the same without importing h5py, which stays out of every process that never meets an
HDF5 file (it costs ~80 ms to import). Writes build the whole file in memory and replace the target
atomically (netspec.atomic), so a crash mid-snapshot never leaves a truncated file. Anything that is not
the expected layout raises HDF5FormatError, one line naming the file and what was missing.
"""
from __future__ import annotations

import io
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from netspec.atomic import PathLike, write_atomically

if TYPE_CHECKING:
    import h5py

#: HDF5's format signature; it sits at offset 0 or, after a user block, at 512, 1024, 2048, ...
SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Caffe's kMaxBlobAxes: datasets with more axes are not blobs.
MAX_BLOB_AXES = 32

#: Per layer: {blob index: array}. A missing index is a blob the layer shares from another layer.
LayerBlobs = Dict[int, np.ndarray]


class HDF5FormatError(ValueError):
    """An HDF5 file could not be read or lacks what Caffe's layout has; one line naming the file."""


class SolverStateH5(NamedTuple):
    """What a ``.solverstate.h5`` holds (``learned_net`` None when the file has none)."""
    iteration: int
    current_step: int
    learned_net: Optional[str]
    history: List[np.ndarray]


def is_hdf5(path: PathLike) -> bool:
    """Whether ``path`` is an HDF5 file by its signature (Caffe's ``H5Fis_hdf5``); False if unreadable."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            offset = 0
            while offset + len(SIGNATURE) <= size:
                handle.seek(offset)
                if handle.read(len(SIGNATURE)) == SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


# ----- weights -----

def load_weights_hdf5(path: PathLike) -> Dict[str, LayerBlobs]:
    """The ``data`` group of a ``.caffemodel.h5``: {layer name: {blob index: float32 array}}, layers in the
    file's (name) order, as Net::CopyTrainedLayersFromHDF5 walks them."""
    h5py = _h5py()
    where = os.fspath(path)
    with _open(where) as handle:
        data = _group(handle, "data", where)
        layers: Dict[str, LayerBlobs] = {}
        for layer_name, group in data.items():
            if not isinstance(group, h5py.Group):
                raise HDF5FormatError(f"{where}: {_quoted('data/' + layer_name)} is a dataset; Caffe's weights file has a "
                                      f"group per layer")
            blobs: LayerBlobs = {}
            for key in group:
                if not key.isdigit():
                    raise HDF5FormatError(f"{where}: {_quoted(f'data/{layer_name}/{key}')} is not a blob index (Caffe names "
                                          f"a layer's blobs 0, 1, ...)")
                blobs[int(key)] = _read_float(group, key, 0, MAX_BLOB_AXES, where, f"data/{layer_name}/")
            layers[layer_name] = blobs
        return layers


def save_weights_hdf5(path: PathLike, layers: Sequence[Tuple[str, LayerBlobs, Optional[LayerBlobs]]]) -> None:
    """Write a ``.caffemodel.h5`` atomically: per layer (in net order) its name, the blobs it owns and, when
    given for any layer, every blob's diff (the ``diff`` group, as Caffe's ``snapshot_diff``)."""
    write_diff = any(diffs is not None for _, _, diffs in layers)

    def fill(handle: "h5py.File") -> None:
        data = handle.create_group("data")
        diff = handle.create_group("diff") if write_diff else None
        for name, blobs, diffs in layers:
            group = data.create_group(name)
            for index, array in sorted(blobs.items()):
                _write_float(group, str(index), array)
            if diff is not None:
                diff_group = diff.create_group(name)
                for index, array in sorted((diffs or {}).items()):
                    _write_float(diff_group, str(index), array)

    _write_file(path, fill)


# ----- solver state -----

def load_solverstate_hdf5(path: PathLike) -> SolverStateH5:
    """Read a ``.solverstate.h5`` as SGDSolver::RestoreSolverStateFromHDF5 does."""
    where = os.fspath(path)
    with _open(where) as handle:
        iteration = _read_int(handle, "iter", where)
        current_step = _read_int(handle, "current_step", where)
        learned_net = _read_string(handle, "learned_net", where) if "learned_net" in handle else None
        group = _group(handle, "history", where)
        count = len(group)
        missing = [str(i) for i in range(count) if str(i) not in group]
        if missing:
            raise HDF5FormatError(f"{where}: history has {count} entries but no 'history/{missing[0]}' (Caffe "
                                  f"numbers them 0..{count - 1})")
        history = [_read_float(group, str(i), 0, MAX_BLOB_AXES, where, "history/") for i in range(count)]
    return SolverStateH5(iteration, current_step, learned_net, history)


def save_solverstate_hdf5(path: PathLike, iteration: int, current_step: int, learned_net: str,
                          history: Sequence[np.ndarray]) -> None:
    """Write a ``.solverstate.h5`` atomically in SnapshotSolverStateToHDF5's layout."""
    h5py = _h5py()

    def fill(handle: "h5py.File") -> None:
        handle.create_dataset("iter", data=np.array([iteration], dtype="<i4"))
        # H5LTmake_dataset_string: a scalar fixed-length ASCII string, null terminator included
        encoded = learned_net.encode()
        string_type = h5py.h5t.C_S1.copy()
        string_type.set_size(len(encoded) + 1)
        string_type.set_strpad(h5py.h5t.STR_NULLTERM)
        space = h5py.h5s.create(h5py.h5s.SCALAR)
        dataset = h5py.h5d.create(handle.id, b"learned_net", string_type, space)
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array(encoded, dtype=f"S{len(encoded) + 1}"))
        handle.create_dataset("current_step", data=np.array([current_step], dtype="<i4"))
        group = handle.create_group("history")
        for i, array in enumerate(history):
            _write_float(group, str(i), array)

    _write_file(path, fill)


# ----- data sets -----

def read_datasets(path: PathLike, names: Sequence[str]) -> List[np.ndarray]:
    """Datasets ``names`` of an HDF5Data file as float32 arrays of at least one axis (integer data is
    converted, as Caffe reads every dataset as float)."""
    where = os.fspath(path)
    with _open(where) as handle:
        return [_read_float(handle, name, 1, None, where, "") for name in names]


def write_datasets(path: PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write float32 datasets (HDF5Output's ``data`` and ``label``) into a new file, atomically."""
    def fill(handle: "h5py.File") -> None:
        for name, array in arrays.items():
            _write_float(handle, name, array)

    _write_file(path, fill)


# ----- helpers -----

def _quoted(value: object) -> str:
    """A name (or list of names) read from the file, quoted and clipped for a one-line message."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _h5py():
    import h5py  # imported here: only processes that touch HDF5 files pay for it
    return h5py


@contextmanager
def _open(where: str) -> Iterator["h5py.File"]:
    """The file open for reading; whatever the HDF5 library raises on a damaged file while it is read
    (OSError, RuntimeError such as "bad heap free list", KeyError...) becomes one HDF5FormatError line."""
    h5py = _h5py()
    if not os.path.exists(where):
        raise FileNotFoundError(f"{where}: no such HDF5 file")
    try:
        with h5py.File(where, "r") as handle:
            yield handle
    except HDF5FormatError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as err:
        first_line = (str(err).splitlines() or [""])[0][:200]
        raise HDF5FormatError(f"{where}: not a readable HDF5 file ({type(err).__name__}: {first_line})") from None


def _group(handle: "h5py.File", name: str, where: str) -> "h5py.Group":
    h5py = _h5py()
    group = handle.get(name)
    if not isinstance(group, h5py.Group):
        raise HDF5FormatError(f"{where}: no group {_quoted(name)} (keys: {_quoted(sorted(handle.keys()))})")
    return group


def _dataset(parent: "h5py.Group", name: str, where: str, prefix: str) -> "h5py.Dataset":
    h5py = _h5py()
    dataset = parent.get(name)
    if not isinstance(dataset, h5py.Dataset):
        raise HDF5FormatError(f"{where}: no dataset {_quoted(prefix + name)} (has: {_quoted(sorted(parent.keys()))})")
    return dataset


def _read_float(parent: "h5py.Group", name: str, min_axes: int, max_axes: Optional[int], where: str,
                prefix: str) -> np.ndarray:
    """hdf5_load_nd_dataset: a float or integer dataset with an allowed number of axes, as float32."""
    dataset = _dataset(parent, name, where, prefix)
    if dataset.dtype.kind not in "fiu":
        raise HDF5FormatError(f"{where}: dataset {_quoted(prefix + name)} holds {dataset.dtype}; Caffe reads only "
                              f"float or integer data")
    axes = dataset.ndim
    if axes < min_axes or (max_axes is not None and axes > max_axes):
        bound = f"at least {min_axes}" if max_axes is None else f"{min_axes}..{max_axes}"
        raise HDF5FormatError(f"{where}: dataset {_quoted(prefix + name)} has {axes} axes, Caffe needs {bound}")
    return np.asarray(dataset[()], dtype=np.float32).reshape(dataset.shape)


def _read_int(handle: "h5py.File", name: str, where: str) -> int:
    """hdf5_load_int: the first element of an integer dataset."""
    dataset = _dataset(handle, name, where, "")
    if dataset.dtype.kind not in "iu" or dataset.size < 1:
        raise HDF5FormatError(f"{where}: '{name}' should be an integer dataset of shape (1,), found "
                              f"{dataset.dtype} {dataset.shape}")
    return int(np.asarray(dataset[()]).reshape(-1)[0])


def _read_string(handle: "h5py.File", name: str, where: str) -> str:
    """hdf5_load_string: the text up to the first null byte."""
    dataset = _dataset(handle, name, where, "")
    value = dataset[()]
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise HDF5FormatError(f"{where}: '{name}' should be a string dataset, found {dataset.dtype} {dataset.shape}")
    return value.split(b"\0", 1)[0].decode()


def _write_float(parent: "h5py.Group", name: str, array: np.ndarray) -> None:
    """hdf5_save_nd_dataset: a contiguous little-endian float32 dataset of the blob's shape (0-d: scalar)."""
    parent.create_dataset(name, data=np.array(array, dtype="<f4", order="C"))


def _write_file(path: PathLike, fill) -> None:
    """Build the file in memory with ``fill(handle)``, then replace ``path`` with it in one step."""
    h5py = _h5py()
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        fill(handle)
    write_atomically(path, buffer.getvalue())
