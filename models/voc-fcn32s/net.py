"""voc-fcn32s: FCN-32s (VGG16) on PASCAL VOC, trained on SBD train, validated on seg11valid.

Run ``python models/voc-fcn32s/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment, single  # noqa: E402
from models.sources import voc  # noqa: E402
from netspec.backbones import fcn32s  # noqa: E402

EXPERIMENT = Experiment(voc(), single(fcn32s))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
