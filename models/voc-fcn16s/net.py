"""voc-fcn16s: FCN-16s (VGG16, pool4 skip) on PASCAL VOC, fine-tuned from voc-fcn32s.

Run ``python models/voc-fcn16s/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment, single  # noqa: E402
from models.sources import voc  # noqa: E402
from netspec.backbones import fcn16s  # noqa: E402

EXPERIMENT = Experiment(voc(), single(fcn16s))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
