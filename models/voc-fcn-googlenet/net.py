"""voc-fcn-googlenet: FCN-GoogLeNet (BVLC GoogLeNet body, 32x output stride) on PASCAL VOC.

Run ``python models/voc-fcn-googlenet/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment, single  # noqa: E402
from models.sources import voc  # noqa: E402
from netspec.googlenet import fcn_googlenet  # noqa: E402

EXPERIMENT = Experiment(voc(), single(fcn_googlenet))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
