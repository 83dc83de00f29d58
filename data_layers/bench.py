"""How many images per second each data layer delivers, with and without prefetching.

The net is stood in for by a fixed sleep per image (``net_seconds``), so the numbers show what the solve
loop sees: without prefetch every decode adds to the step time; with it, decoding hides behind the net
until the net is faster than the decoder. ``make bench`` prints ``format_results(bench())``.
"""
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from data_layers.catalog import open_layer
from data_layers.layout import KINDS, dataset_params
from data_layers.synthetic import SPLITS, write_dataset


@dataclass
class BenchResult:
    kind: str
    prefetch: int
    images: int
    seconds: float
    wait_seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def bench_layer(kind: str, params: Dict[str, str], split: str, images: int = 40, prefetch: int = 4,
                workers: int = 2, net_seconds: float = 0.0) -> BenchResult:
    """Time ``images`` reshape+forward steps of one layer, sleeping ``net_seconds`` after each."""
    layer, tops = open_layer(kind, dict(params, split=split, prefetch=prefetch, workers=workers, seed=0))
    layer.reshape([], tops)  # first sample: start-up, not throughput
    layer.forward([], tops)
    waited = layer.wait_seconds
    start = time.perf_counter()
    for _ in range(images):
        layer.reshape([], tops)
        layer.forward([], tops)
        if net_seconds:
            time.sleep(net_seconds)
    seconds = time.perf_counter() - start
    layer.close()
    return BenchResult(kind, prefetch, images, seconds, layer.wait_seconds - waited)


def bench(kinds: Sequence[str] = KINDS, data_root: Optional[Union[str, Path]] = None, images: int = 40,
          size: Tuple[int, int] = (256, 256), net_seconds: float = 0.01, prefetch: int = 4,
          workers: int = 2) -> List[BenchResult]:
    """Both settings (prefetch 0 and ``prefetch``) for each kind, on the datasets under ``data_root``
    (release layout) or, without one, on synthetic datasets of ``images`` pictures of ``size``."""
    results = []
    with tempfile.TemporaryDirectory(prefix="fcn-bench-") as scratch:
        for kind in kinds:
            split = SPLITS[kind][0]
            if data_root is None:
                params = write_dataset(kind, scratch, n=images, size=size, seed=0)
            else:
                params = dataset_params(kind, data_root)
            for depth in (0, prefetch):
                results.append(bench_layer(kind, params, split, images, depth, workers, net_seconds))
    return results


def format_results(results: Sequence[BenchResult]) -> str:
    """A plain-text table: kind, prefetch depth, images/s, seconds the net waited per image."""
    lines = [f"{'dataset':<10}{'prefetch':>9}{'images/s':>11}{'wait ms/img':>13}"]
    for r in results:
        lines.append(f"{r.kind:<10}{r.prefetch:>9}{r.images_per_second:>11.1f}"
                     f"{1000.0 * r.wait_seconds / r.images:>13.2f}")
    return "\n".join(lines)
