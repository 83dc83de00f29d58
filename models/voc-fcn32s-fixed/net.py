"""voc-fcn32s-fixed: FCN-32s on PASCAL VOC with the VGG16 body fixed: only score_fr learns.

Run ``python models/voc-fcn32s-fixed/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment, single  # noqa: E402
from models.sources import voc  # noqa: E402
from netspec.ablations import fcn32s_fixed  # noqa: E402

EXPERIMENT = Experiment(voc(), single(fcn32s_fixed))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
