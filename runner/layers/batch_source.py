"""What Caffe's data layers share: no bottoms, a data top and a label top, batches made on the host.

A subclass says how to make its next batch (as numpy arrays, or tensors over a user's arrays); this base
hands them to the net on the current device, remembers their shapes (a batch may change the top's shape,
e.g. ImageData with batch_size 1 and images of different sizes) and, for the layers that read files,
loads batches ahead on a background thread (``data_param.prefetch`` batches, Caffe's default 4).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Optional, Sequence

import torch

from netspec import glog
from runner.device import caffe_rng_seed, current_device
from runner.layers.base import Layer, Shape
from runner.prefetch import BatchPrefetcher


class BatchSource(Layer):
    """Base of Data, ImageData, MemoryData and WindowData."""

    traceable = False  # a new batch from outside the tensors at every pass
    #: Caffe's top counts: BaseDataLayer takes 1 or 2 tops (data, optional label); most subclasses 2.
    min_tops, max_tops = 2, 2

    def __init__(self, layer_param: Any, phase: int) -> None:
        super().__init__(layer_param, phase)
        self.label = f"layer '{self.name}' ({self.type})"
        if len(layer_param.bottom):
            raise ValueError(f"{self.label} takes no bottom blobs, got {len(layer_param.bottom)}")
        tops = len(layer_param.top)
        if not self.min_tops <= tops <= self.max_tops:
            want = str(self.max_tops) if self.min_tops == self.max_tops else f"{self.min_tops} or {self.max_tops}"
            raise ValueError(f"{self.label} has {want} top blobs (data, label), got {tops}")
        self.output_labels = tops > 1
        #: The tops' shapes: those set up at construction, then those of the last batch.
        self.shapes: List[Shape] = []
        self._prefetcher: Optional[BatchPrefetcher] = None
        #: What the layer logged while ``setting_up`` (the net writes it after wiring the layer, as Caffe).
        self.setup_records: List[Any] = []

    @contextlib.contextmanager
    def setting_up(self) -> Iterator[None]:
        """The part of construction that is Caffe's LayerSetUp: its lines wait until the net sets the layer up
        (or, when it fails, come out before the error does)."""
        try:
            with glog.held(self.setup_records):
                yield
        except BaseException:
            glog.release(self.setup_records)
            raise

    def positive(self, field: str, value: int) -> int:
        """A count from the layer's parameters that must be positive (batch_size, ...)."""
        if value <= 0:
            raise ValueError(f"{self.label}: {field} must be positive, got {value}")
        return int(value)

    def set_shapes(self, data_shape: Shape, label_shape: Shape, logged_at: Optional[str] = None) -> None:
        """The tops' shapes at set-up; ``logged_at``: the file:line of Caffe's "output data size" line."""
        self.shapes = [tuple(data_shape)] + ([tuple(label_shape)] if self.output_labels else [])
        if logged_at is not None:
            glog.info(logged_at, "output data size: %s", ",".join(str(d) for d in data_shape))

    def prefetch(self, depth: int) -> None:
        """The end of Caffe's BasePrefetchingDataLayer::LayerSetUp: the transformer's generator seeded anew
        (``init_transformer_rand``) and the prefetch thread's seed drawn (StartInternalThread), which keeps a
        seeded global generator where Caffe's stands; then batches load ``depth`` ahead."""
        self.init_transformer_rand()
        caffe_rng_seed()  # the prefetch thread's own generator: nothing in these layers draws from it
        self._prefetcher = BatchPrefetcher(self.load_batch, depth, self.name)

    def init_transformer_rand(self) -> None:
        """The transformer's InitRand (the layer's ``transformer``, where it has one)."""
        transformer = getattr(self, "transformer", None)
        if transformer is not None:
            transformer.init_rand()

    def load_batch(self) -> Sequence[Any]:
        """The next (data, label) as float32 arrays or tensors; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__}.load_batch")

    def top_shapes(self, bottom_shapes: Sequence[Shape], param_shapes: Sequence[Shape]) -> List[Shape]:
        return list(self.shapes)

    def forward(self, bottoms: List[torch.Tensor], params: List[torch.Tensor]) -> List[torch.Tensor]:
        batch = self._prefetcher.next() if self._prefetcher is not None else self.load_batch()
        device = current_device()
        tops = [torch.as_tensor(array).to(device) for array in batch[:len(self.layer_param.top)]]
        self.shapes = [tuple(top.shape) for top in tops]
        return tops

