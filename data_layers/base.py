"""What every FCN segmentation data layer does, whatever the dataset: the Caffe Python-layer protocol.

A dataset subclass says only where its files are (``folders``, ``split_file``, ``source``) and how one
file becomes one top (``decode``). This base parses ``param_str``, checks the dataset is there, picks the
sample order (seeded shuffles for training splits, file order otherwise, sharded by ``rank``), prefetches
on background threads, checks that the tops of a sample agree in size, and either raises on a bad sample
or, with ``skip_bad``, counts it, logs it and moves on. Tops are 1 x C x H x W, reshaped per image.

``param_str`` keys every layer takes, besides ``split`` and its dataset folder key(s):
  randomize   shuffle (default True); applies only to splits whose name contains "train", as released
  seed        seed of the shuffles (default None: different every run)
  mean        B, G, R values to subtract (default: the dataset's published mean)
  rank, world_size   read only every world_size-th sample, starting at rank (distributed runs)
  skip_bad    skip unusable samples, counting them in ``skipped``/``bad_samples`` (default False: raise)
  prefetch    samples decoded ahead on background threads (default 4; 0 decodes inline)
  workers     decoding threads (default 2)
  mirror      random left-right flips of image and label together (default False; ``augment``)
  jitter      random translation of up to this many pixels each way (default 0; ``augment``)
  mask        blank "foreground", "background" or keep only the "shape" (default none; ``masking``)
"""
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from data_layers.augment import Augmenter
from data_layers.errors import BadSampleError, DatasetNotFoundError
from data_layers.masking import MASKS, mask_sample
from data_layers.order import process_shard, sample_order, shard
from data_layers.params import parse_param_str
from data_layers.prefetch import Prefetcher
from runner.blob import Blob
from runner.python_layer import Layer

log = logging.getLogger(__name__)

Sample = Dict[str, np.ndarray]

COMMON_KEYS = ("randomize", "seed", "mean", "rank", "world_size", "skip_bad", "prefetch", "workers",
               "mirror", "jitter", "mask")
DEFAULT_PREFETCH = 4
DEFAULT_WORKERS = 2


def is_plain_name(sample_id: str) -> bool:
    """Whether a split-file id can only name a file inside its folder: no separators, no '..', no NUL (an
    id like ``../../x`` or ``/abs/x`` would read, or with save_predictions write, outside the dataset)."""
    return sample_id not in (".", "..") and not any(c in sample_id for c in "/\\\0")


class SegDataLayer(Layer):
    """Base of the dataset layers; the module docstring lists the shared ``param_str`` keys.

    After setup: ``ids`` (this shard's sample ids in file order), ``sample_id`` (the sample the tops hold
    after forward), ``images`` delivered, ``skipped``/``bad_samples``, and ``wait_seconds``.
    """

    kind = ""                     # the name ``fcn synth`` knows this format by
    dataset = ""                  # human name for messages
    how_to_get = ""               # where the real data comes from
    dir_keys: Tuple[str, ...] = ()
    extra_keys: Tuple[str, ...] = ()
    tops: Tuple[str, ...] = ("data", "label")
    default_mean: Tuple[float, float, float] = (0.0, 0.0, 0.0)

    _feed: Optional[Prefetcher] = None

    @property
    def root(self) -> Path:
        """The dataset folder named by the first of ``dir_keys``."""
        return Path(self.params[self.dir_keys[0]])

    # ----- what a dataset subclass provides -----
    def folders(self) -> Sequence[Path]:
        """Dataset folders that must exist (checked before anything is read)."""
        return [Path(self.params[key]) for key in self.dir_keys]

    def configure(self, params: Dict[str, Any]) -> None:
        """Read dataset-specific keys and tables; called after the folders are known to exist."""

    def split_file(self) -> Path:
        raise NotImplementedError

    def source(self, top: str, sample_id: str) -> Path:
        """The file holding ``top`` of sample ``sample_id``."""
        raise NotImplementedError

    def decode(self, top: str, path: Path) -> np.ndarray:
        """C x H x W array of ``top`` read from ``path``; BadSampleError if it cannot be used."""
        raise NotImplementedError

    # ----- Caffe's protocol -----
    def setup(self, bottom: List[Blob], top: List[Blob]) -> None:
        where = type(self).__name__
        params = parse_param_str(self.param_str, ("split",) + self.dir_keys,
                                 COMMON_KEYS + self.extra_keys, where)
        self.params = params
        self.split = str(params["split"])
        self.mean = np.asarray(params.get("mean", self.default_mean), dtype=np.float64)
        if self.mean.shape != (3,):
            raise ValueError(f"{where}: mean must have 3 values (B, G, R), got {params['mean']!r}")
        for folder in self.folders():
            self.require(folder, "dataset folder")
        self.configure(params)
        if bottom:
            raise ValueError(f"{where}: a data layer takes no bottoms, got {len(bottom)}")
        if len(top) != len(self.tops):
            raise ValueError(f"{where}: needs {len(self.tops)} tops ({', '.join(self.tops)}), got {len(top)}")
        rank, world_size = process_shard(params, self.phase)
        self.ids = shard(self._read_split(), rank, world_size)
        self.randomize = bool(params.get("randomize", True)) and "train" in self.split
        self.skip_bad = bool(params.get("skip_bad", False))
        self.augment = Augmenter(bool(params.get("mirror", False)), int(params.get("jitter", 0)),
                                 params.get("seed"))
        self.mask = params.get("mask")
        if self.mask is not None and self.mask not in MASKS:
            raise ValueError(f"{where}: mask must be one of {', '.join(MASKS)}, got {self.mask!r}")
        self.bad_samples: Dict[str, str] = {}
        self.skipped = 0
        self.images = 0
        self.sample_id: Optional[str] = None
        self._next: Optional[Tuple[str, Sample]] = None  # loaded by reshape, handed out by forward
        self.close()
        self._feed = Prefetcher(self.load, sample_order(self.ids, self.randomize, params.get("seed")),
                                int(params.get("prefetch", DEFAULT_PREFETCH)),
                                int(params.get("workers", DEFAULT_WORKERS)))

    def reshape(self, bottom: List[Blob], top: List[Blob]) -> None:
        _, sample = self._current()
        for blob, name in zip(top, self.tops):
            blob.reshape(1, *sample[name].shape)

    def forward(self, bottom: List[Blob], top: List[Blob]) -> None:
        self.sample_id, sample = self._current()
        for blob, name in zip(top, self.tops):
            blob.data[...] = sample[name]
        self._next = None  # the next reshape moves on, as Caffe reshapes before every forward
        self.images += 1

    # ----- measurements the solve loop reads -----
    @property
    def wait_seconds(self) -> float:
        """Cumulative seconds the net spent waiting for this layer's data (decode time not hidden)."""
        return self._feed.wait_seconds if self._feed is not None else 0.0

    def close(self) -> None:
        """Stop prefetching (threads also stop when the layer is garbage collected)."""
        if self._feed is not None:
            self._feed.close()

    # ----- loading -----
    def load(self, sample_id: str) -> Sample:
        """All tops of one sample, decoded and checked to share one height and width."""
        sample, paths = {}, {}
        for top in self.tops:
            paths[top] = self.source(top, sample_id)
            sample[top] = self.decode(top, paths[top])
        sizes = {top: array.shape[-2:] for top, array in sample.items()}
        first = self.tops[0]
        for top, size in sizes.items():
            if size != sizes[first]:
                raise BadSampleError(paths[top], f"size {size[0]}x{size[1]} differs from "
                                                 f"{paths[first]} ({sizes[first][0]}x{sizes[first][1]})")
        return sample

    def _current(self) -> Tuple[str, Sample]:
        if self._next is None:
            self._next = self._transformed(*self._next_usable())
        return self._next

    def _transformed(self, sample_id: str, sample: Sample) -> Tuple[str, Sample]:
        """Masking, then augmentation, here in the layer's thread so seeded draws follow sample order."""
        if self.mask is not None:
            sample = mask_sample(sample, self.mask)
        if self.augment.active:
            sample = self.augment(sample)
        return sample_id, sample

    def _next_usable(self) -> Tuple[str, Sample]:
        """The next id and sample; with ``skip_bad``, bad ones are counted, logged and passed over."""
        for _ in range(len(self.ids)):
            try:
                return self._feed.next()
            except BadSampleError as err:
                if not self.skip_bad:
                    raise
                self.skipped += 1
                self.bad_samples[err.path] = err.reason
                log.warning("%s: skipped bad sample (%d so far): %s", type(self).__name__, self.skipped, err)
        raise BadSampleError(self.split_file(), f"{len(self.ids)} bad samples in a row: every sample "
                                                f"of this split is unusable (see bad_samples)")

    # ----- dataset presence -----
    def require(self, path: Path, what: str) -> Path:
        """``path`` if it exists, else a DatasetNotFoundError saying where to get the data."""
        if not path.exists():
            demo = " (`make demo` writes one under demo/data)" if self.kind == "voc" else ""
            raise DatasetNotFoundError(
                f"{self.dataset} not found: expected {what} {path}. {self.how_to_get} "
                f"For a synthetic stand-in in the same format run `fcn synth {self.kind} --out <data root>`{demo}.")
        return path

    def _read_split(self) -> List[str]:
        split_file = self.split_file()
        if not split_file.exists() and split_file.parent.is_dir():
            known = sorted(p.stem for p in split_file.parent.glob("*.txt"))
            if known:
                raise DatasetNotFoundError(f"{self.dataset} at {self.root} has no split '{self.split}' "
                                           f"({split_file} is missing); its splits: {', '.join(known)}")
        path = self.require(split_file, f"split list '{self.split}'")
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not ids:
            raise DatasetNotFoundError(f"{self.dataset}: split list {path} is empty")
        for number, sample_id in enumerate(ids, start=1):
            if not is_plain_name(sample_id):
                raise BadSampleError(path, f"entry {number} ({sample_id[:80]!r}) is not a plain sample id: ids name "
                                           f"files inside {self.root} (and predictions inside the output folder), "
                                           f"so they may not hold '/', '\\', '..' or NUL")
        return ids
