"""An experiment = a data source + a net builder: its train/test and deploy nets, written to its folder.

Every models/<experiment>/net.py defines ``EXPERIMENT`` and calls ``EXPERIMENT.main`` when run;
``models.make_nets`` and the tests load the same object, so a net exists in exactly one place.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from models.sources import DATA_ROOT, Source
from netspec import caffe_pb2
from netspec.backbones import input_layer
from netspec.net_spec import NetSpec
from netspec.prototxt import write_prototxt

__all__ = ["Build", "Experiment", "single"]

# build(n, deploy): add the net to ``n``, whose input (and, unless deploy, label) tops are set.
# Deploy nets have no label, no loss and no dropout.
Build = Callable[[NetSpec, bool], None]

DEPLOY = "deploy.prototxt"


def single(builder: Callable[..., object], dropout: bool = True, **kwargs) -> Build:
    """The common build: ``builder(n, n.data, label, dropout=..., **kwargs)``.

    ``dropout=False`` for builders without a dropout switch (the truncated FCN-poolX nets).
    """
    def build(n: NetSpec, deploy: bool) -> None:
        switch = {"dropout": not deploy} if dropout else {}
        builder(n, n.data, None if deploy else n.label, **switch, **kwargs)
    return build


@dataclass(frozen=True)
class Experiment:
    """The nets of one experiment folder."""

    source: Source
    build: Build

    def nets(self, data_root: str = DATA_ROOT) -> dict[str, caffe_pb2.NetParameter]:
        """File name -> net: one per split (train/val or trainval/test) and deploy.prototxt."""
        nets = {}
        for stem, split in self.source.splits.items():
            n = NetSpec()
            self.source.data_layer(n, split, data_root)
            self.build(n, False)
            nets[f"{stem}.prototxt"] = n.to_proto()
        n = NetSpec()
        input_layer(n, self.source.inputs)
        self.build(n, True)
        nets[DEPLOY] = n.to_proto()
        return nets

    def write(self, folder: Path, data_root: str = DATA_ROOT) -> list[Path]:
        """Write every net into ``folder`` (made if missing, files written atomically)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, net in self.nets(data_root).items():
            write_prototxt(folder / name, net)
            paths.append(folder / name)
        return paths

    def main(self, folder: Path, argv: Optional[Sequence[str]] = None) -> None:
        """The net.py command line: write the prototxts, data paths overridable."""
        parser = argparse.ArgumentParser(description=f"Write {folder.name}'s prototxts.")
        parser.add_argument("--data-root", default=DATA_ROOT,
                            help="the datasets' parent folder, as the nets' data layers will "
                                 "see it from where the solver runs (default: %(default)s, the "
                                 "repo's data/ seen from the experiment folder)")
        parser.add_argument("--out", type=Path, default=folder,
                            help="where to write (default: the experiment folder)")
        args = parser.parse_args(argv)
        for path in self.write(args.out, args.data_root):
            print(path)
