"""pycaffe's Blob: ``.data`` and ``.diff`` as numpy arrays over tensors that may live on a GPU.

Caffe's SyncedMemory keeps a host and a device copy and a "head" saying which one is current; pycaffe's
``.data`` hands out the host copy and moves the head there, so a script that writes ``blob.data[...]``
before a GPU forward is honoured. We keep the same contract. On the CPU the numpy arrays are views of
the tensors' storage, so there is never a copy; on a GPU the host mirror is filled only when Python
code asks for it, so the hot path (layer to layer on the device) never synchronises.

Inference on the CPU may leave a blob's tensor in channels-last layout (the one oneDNN's kernels take);
``.data`` then turns it back into a C-contiguous tensor, once, before handing out the view, so that Python
always sees Caffe's NCHW arrays and writes into them reach the blob.

The runner keeps things computed from parameters (packed convolution weights, compiled code holding them as
constants), so it must know when a parameter may have changed. Torch's version counter sees writes made
through tensors; writes through a numpy array handed out by ``.data`` leave no trace, so a Blob takes a new
stamp for every array it hands out (and every new tensor) and remembers the arrays still alive
(``data_version``).
"""
from __future__ import annotations

import itertools
import weakref
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

_DEVICE, _HOST = "device", "host"
#: Numbers no two states of any blobs share: a Blob takes a new one whenever its data may have changed in a
#: way torch's version counter does not see (a new tensor, a numpy array handed out).
_STAMPS = itertools.count()


class _Synced:
    """One tensor plus its lazily made host mirror, with Caffe's head semantics. Made with a shape only
    (``zeros``), it allocates its zeros when first read, as Caffe's SyncedMemory allocates on first use:
    building a net sizes every blob but spends no memory on activations a forward will replace."""

    __slots__ = ("_tensor", "_shape", "_device", "host", "head")

    def __init__(self, tensor: torch.Tensor) -> None:
        self._tensor: Optional[torch.Tensor] = tensor
        self._shape, self._device = tuple(tensor.shape), tensor.device
        self.host: Optional[np.ndarray] = None
        self.head = _DEVICE

    @classmethod
    def zeros(cls, shape: Tuple[int, ...], device: torch.device) -> "_Synced":
        synced = cls.__new__(cls)
        synced._tensor, synced._shape, synced._device = None, shape, device
        synced.host, synced.head = None, _DEVICE
        return synced

    @property
    def tensor(self) -> torch.Tensor:
        if self._tensor is None:
            self._tensor = torch.zeros(self._shape, dtype=torch.float32, device=self._device)
        return self._tensor

    @property
    def shape(self) -> Tuple[int, ...]:
        return self._shape

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def allocated(self) -> bool:
        return self._tensor is not None

    def set(self, tensor: torch.Tensor) -> None:
        self._tensor, self._shape, self._device = tensor, tuple(tensor.shape), tensor.device
        self.head = _DEVICE

    def numpy(self) -> np.ndarray:
        """The host array; on a device, copied over and marked as the current head (the caller may write)."""
        t = self.tensor  # a 0-axis blob (a loss, an accuracy) stays 0-d, as real pycaffe shows it
        if t.device.type == "cpu":
            if not t.is_contiguous():  # left channels-last by an inference pass: NCHW from now on
                t = self._tensor = t.contiguous()
            return t.detach().numpy()
        if self.head == _DEVICE:
            if self.host is None or self.host.shape != tuple(t.shape):
                self.host = np.empty(tuple(t.shape), dtype=np.float32)
            self.host[...] = t.detach().cpu().numpy()
            self.head = _HOST
        return self.host

    def current(self) -> torch.Tensor:
        """The tensor, after bringing back any host-side writes (written into the same storage, so that
        tensors saved by autograd keep their identity, as Caffe overwrites blob memory)."""
        if self.head == _HOST and self.host is not None:
            self.tensor.data.copy_(torch.from_numpy(self.host).reshape(self.tensor.shape))
            self.head = _DEVICE
        return self.tensor

    def to(self, device: torch.device) -> None:
        if self._tensor is None:
            self._device = device
            return
        current = self.current()
        if current.device != device:
            self.set(current.detach().to(device))
            self.host = None


def legacy_shape(shape: Sequence[int]) -> Tuple[int, int, int, int]:
    """Caffe's num/channels/height/width of a blob (Blob::LegacyShape): at most 4 axes, the missing trailing
    ones count as 1, so a (6,) blob is 6x1x1x1 (as HDF5Output stores a label vector)."""
    if len(shape) > 4:
        raise ValueError(f"legacy num/channels/height/width asked of a {len(shape)}-D blob {tuple(shape)}; "
                         f"use .shape")
    return tuple(int(d) for d in shape) + (1,) * (4 - len(shape))  # type: ignore[return-value]


class Blob:
    """A named N-D float32 array with a gradient, as pycaffe exposes it."""

    def __init__(self, shape: Sequence[int] = (), device: torch.device = torch.device("cpu"),
                 tensor: Optional[torch.Tensor] = None) -> None:
        self._data = _Synced(tensor) if tensor is not None else \
            _Synced.zeros(tuple(int(d) for d in shape), torch.device(device))
        self._diff: Optional[_Synced] = None
        self._stamp = next(_STAMPS)
        self._live_arrays: List["weakref.ref[np.ndarray]"] = []

    # ----- the arrays -----
    @property
    def data(self) -> np.ndarray:
        array = self._data.numpy()
        self._stamp = next(_STAMPS)
        if self._data.device.type == "cpu":  # the array is the tensor's memory: writes may come at any time
            self._live_arrays = [ref for ref in self._live_arrays if ref() is not None]
            self._live_arrays.append(weakref.ref(array))
        return array

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self.data[...] = value

    @property
    def diff(self) -> np.ndarray:
        return self._diff_synced().numpy()

    @diff.setter
    def diff(self, value: np.ndarray) -> None:
        self.diff[...] = value

    # ----- shape -----
    @property
    def shape(self) -> Tuple[int, ...]:
        return self._data.shape

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def _legacy_dim(self, index: int) -> int:
        return legacy_shape(self.shape)[index]

    @property
    def num(self) -> int:
        return self._legacy_dim(0)

    @property
    def channels(self) -> int:
        return self._legacy_dim(1)

    @property
    def height(self) -> int:
        return self._legacy_dim(2)

    @property
    def width(self) -> int:
        return self._legacy_dim(3)

    def reshape(self, *shape: int) -> None:
        """Give the blob a new shape. Values are kept when the count is unchanged, otherwise zeroed
        (Caffe reallocates only when the count grows; nobody may rely on the old values then)."""
        if len(shape) == 1 and not isinstance(shape[0], int):
            shape = tuple(shape[0])
        new_shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in new_shape):
            raise ValueError(f"Blob.reshape: negative dimension in {new_shape}")
        if new_shape == self.shape:
            return
        if self._data.allocated and self.count == int(np.prod(new_shape, dtype=np.int64)):
            self._data.set(self._data.current().detach().reshape(new_shape).clone())
        else:  # new zeros, allocated when first read
            self._data = _Synced.zeros(new_shape, self._data.device)
        self._diff = None
        self._stamp = next(_STAMPS)

    # ----- for the runner -----
    @property
    def device(self) -> torch.device:
        return self._data.device

    def tensor(self) -> torch.Tensor:
        """The current data tensor (host-side writes applied)."""
        return self._data.current()

    def data_version(self) -> Optional[Tuple[int, int, int]]:
        """A value that changes whenever the data may have changed: a new tensor or storage, a write through
        torch (its version counter), a numpy array handed out (which may have been written). None while such
        an array of CPU data is still alive, as Python may write through it at any moment unseen."""
        if self._live_arrays and any(ref() is not None for ref in self._live_arrays):
            return None
        t = self._data.tensor
        return self._stamp, t._version, t.data_ptr()

    def set_tensor(self, tensor: torch.Tensor) -> None:
        """Make a freshly computed tensor this blob's data (the device copy becomes the head)."""
        self._data.set(tensor)
        self._stamp = next(_STAMPS)

    def diff_tensor(self) -> torch.Tensor:
        return self._diff_synced().current()

    def set_diff_tensor(self, tensor: torch.Tensor) -> None:
        if self._diff is None:
            self._diff = _Synced(tensor)
        else:
            self._diff.set(tensor)

    def fill_diff_if_unset(self, value: float) -> None:
        """Caffe's SetLossWeights: a loss-weighted top's diff holds its weight in every element, the seed of
        backward. Written where the diff is unset or sized for an earlier shape; a diff the user wrote stays."""
        if self._diff is None or self._diff.shape != self._data.shape:
            self.set_diff_tensor(torch.full(self.shape, float(value), device=self.device))

    def has_diff(self) -> bool:
        return self._diff is not None

    def to(self, device: torch.device) -> None:
        self._data.to(device)
        if self._diff is not None:
            self._diff.to(device)
        self._stamp = next(_STAMPS)

    def _diff_synced(self) -> _Synced:
        if self._diff is None or self._diff.shape != self._data.shape:
            self._diff = _Synced.zeros(self._data.shape, self._data.device)
        return self._diff

    def __repr__(self) -> str:
        return f"Blob(shape={self.shape})"
