"""HDF5Data and HDF5Output: rows in and out of HDF5 files, as Caffe's layers of those names.

HDF5Data reads the files named in a list file (``hdf5_data_param.source``, one path per whitespace-separated
token, opened from the working directory as Caffe opens them), one dataset per top of the same name,
every dataset as float32. Each forward hands out ``batch_size`` rows, moving on through the file, then to
the next file, and back to the first after the last: with one file of 6 rows and batches of 4, the
batches are rows 0-3, 4,5,0,1, 2-5. Tops are ``(batch_size,) + dataset.shape[1:]``, so a label stored as
(N,) gives a (batch_size,) top and one stored as (N, 1, 1, 1), as HDF5Output writes it, a 4-D one.
``shuffle`` permutes the files and the rows of each file, anew at each pass, from torch's generator (so
``random_seed`` makes it repeatable; Caffe's ``std::random_shuffle`` order cannot be reproduced anyway).
In a data-parallel run (torch.distributed) a TRAIN net's layer keeps, as Caffe's Skip(), only the rows at
stream positions ``rank, rank + world_size, ...``, so the processes share the rows out; TEST nets read all.

HDF5Output writes its two bottoms as datasets ``data`` and ``label`` of ``hdf5_output_param.file_name``,
each shaped by Caffe's legacy num/channels/height/width (trailing axes padded with 1: a (6,) label is
stored as (6, 1, 1, 1)). Caffe creates the datasets at the first forward and aborts at a second one, which
would write them again; here that second forward is a clear error instead, and the file is written
atomically.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from netspec import caffe_pb2
from netspec.hdf5 import HDF5FormatError, read_datasets, write_datasets
from runner.blob import legacy_shape
from runner.device import current_device
from runner.layers.base import Layer, Shape
from runner.registry import register


@register("HDF5Data")
class HDF5Data(Layer):
    """Batches of rows from the HDF5 files a list file names (see the module doc)."""

    traceable = False  # file I/O on every forward

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        param = layer_param.hdf5_data_param
        if layer_param.HasField("transform_param"):
            raise ValueError(f"layer '{self.name}' (HDF5Data) does not transform data; remove its transform_param")
        if not layer_param.top:
            raise ValueError(f"layer '{self.name}' (HDF5Data) needs at least one top (a dataset name)")
        if param.batch_size < 1:
            raise ValueError(f"layer '{self.name}' (HDF5Data): hdf5_data_param.batch_size must be >= 1, "
                             f"got {param.batch_size}")
        self.batch_size = int(param.batch_size)
        self.shuffle = bool(param.shuffle)
        self.datasets = list(layer_param.top)
        self.files = self._read_list(param.source)
        self.file_order = self._order(len(self.files))
        self.file_index = 0
        self.rank, self.world_size = self._shard()
        self.position = 0  # rows of the stream passed so far, this process's and the others' (Caffe's offset_)
        self.row_shapes: Optional[List[Shape]] = None
        self._load(self.files[self.file_order[0]])

    def _read_list(self, source: str) -> List[str]:
        try:
            with open(source) as handle:
                names = handle.read().split()
        except OSError as err:
            raise FileNotFoundError(f"layer '{self.name}' (HDF5Data): cannot read the list of HDF5 files "
                                    f"'{source}' (hdf5_data_param.source, opened from the working directory "
                                    f"{os.getcwd()}): {err.strerror}") from None
        if not names:
            raise ValueError(f"layer '{self.name}' (HDF5Data): '{source}' lists no HDF5 file; it should hold "
                             f"at least one path")
        return names

    def _shard(self) -> Tuple[int, int]:
        """(rank, world_size) of this process's share of the rows: its place in a torch.distributed run for
        a TRAIN net, else (0, 1)."""
        import torch.distributed as dist
        if self.phase == caffe_pb2.TRAIN and dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _order(self, count: int) -> List[int]:
        return torch.randperm(count).tolist() if self.shuffle else list(range(count))

    def _load(self, path: str) -> None:
        """Read one file's datasets (Caffe's LoadHDF5FileData) and start at its first row."""
        where = f"layer '{self.name}' (HDF5Data)"
        try:
            arrays = read_datasets(path, self.datasets)
        except HDF5FormatError as err:
            raise HDF5FormatError(f"{where}: {err}") from None
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{where}: {err} (listed in '{self.layer_param.hdf5_data_param.source}', "
                                    f"opened from the working directory {os.getcwd()})") from None
        rows = arrays[0].shape[0]
        for name, array in zip(self.datasets, arrays):
            if array.shape[0] != rows:
                raise ValueError(f"{where}: {path}: dataset '{name}' has {array.shape[0]} rows, "
                                 f"'{self.datasets[0]}' has {rows}; every top's dataset needs the same first dim")
        if rows == 0:
            raise ValueError(f"{where}: {path}: dataset '{self.datasets[0]}' has no rows")
        shapes = [tuple(array.shape[1:]) for array in arrays]
        if self.row_shapes is None:
            self.row_shapes = shapes
        elif shapes != self.row_shapes:
            raise ValueError(f"{where}: {path}: rows of shapes {shapes} differ from the first file's "
                             f"{self.row_shapes} (datasets {self.datasets})")
        self.arrays = arrays
        self.row_order = np.array(self._order(rows), dtype=np.int64)
        self.row = 0

    def _advance(self, count: int) -> None:
        """Move ``count`` rows on (at most to the end of this file); at the end, go to the next file
        (Caffe's Next: a single file is not read again, its rows are only reshuffled)."""
        self.row += count
        if self.row < len(self.row_order):
            return
        if len(self.files) > 1:
            self.file_index += 1
            if self.file_index == len(self.files):
                self.file_index = 0
                if self.shuffle:
                    self.file_order = self._order(len(self.files))
            self._load(self.files[self.file_order[self.file_index]])
        else:
            self.row = 0
            if self.shuffle:
                self.row_order = np.array(self._order(len(self.row_order)), dtype=np.int64)

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(0, 0, bottom_shapes)
        return [(self.batch_size,) + shape for shape in self.row_shapes]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(0, 0, bottoms)
        batches = [np.empty((self.batch_size,) + shape, dtype=np.float32) for shape in self.row_shapes]
        filled = 0
        while filled < self.batch_size:
            left = len(self.row_order) - self.row
            mine = np.flatnonzero((self.position + np.arange(left)) % self.world_size == self.rank)
            mine = mine[:self.batch_size - filled]
            rows = self.row_order[self.row + mine]
            for batch, array in zip(batches, self.arrays):
                batch[filled:filled + len(rows)] = array[rows]
            filled += len(rows)
            passed = int(mine[-1]) + 1 if filled == self.batch_size else left
            self.position += passed
            self._advance(passed)
        device = current_device()
        return [torch.from_numpy(batch).to(device) for batch in batches]


@register("HDF5Output")
class HDF5Output(Layer):
    """Writes its bottoms ``data`` and ``label`` to ``hdf5_output_param.file_name`` (see the module doc)."""

    traceable = False  # file I/O on every forward

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.file_name = layer_param.hdf5_output_param.file_name
        if not self.file_name:
            raise ValueError(f"layer '{self.name}' (HDF5Output) needs hdf5_output_param.file_name")
        if layer_param.top:
            raise ValueError(f"layer '{self.name}' (HDF5Output) has no tops; the prototxt names "
                             f"{list(layer_param.top)}")
        self.written = False

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        self.check_bottoms(2, 2, bottom_shapes)
        self._legacy_shapes(bottom_shapes)
        return []

    def _legacy_shapes(self, shapes: Sequence[Shape]) -> Tuple[Shape, Shape]:
        """Caffe's num/channels/height/width of each bottom, the shapes HDF5Output writes."""
        try:
            legacy = [legacy_shape(shape) for shape in shapes]
        except ValueError as err:
            raise ValueError(f"layer '{self.name}' (HDF5Output): {err}") from None
        if legacy[0][0] != legacy[1][0]:
            raise ValueError(f"layer '{self.name}' (HDF5Output): data has {legacy[0][0]} rows, label "
                             f"{legacy[1][0]}; they must have the same batch size")
        return legacy[0], legacy[1]

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        self.check_bottoms(2, 2, bottoms)
        if self.written:
            raise ValueError(f"layer '{self.name}' (HDF5Output): {self.file_name} already holds the 'data' and "
                             f"'label' of an earlier forward; Caffe writes them once per net (and aborts on a "
                             f"second forward)")
        shapes = self._legacy_shapes([tuple(b.shape) for b in bottoms])
        data, label = [b.detach().float().cpu().numpy().reshape(shape) for b, shape in zip(bottoms, shapes)]
        write_datasets(self.file_name, {"data": data, "label": label})
        self.written = True
        return []
