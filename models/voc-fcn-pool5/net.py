"""voc-fcn-pool5: FCN scoring VGG16's pool5 (no fc6/fc7), upsampled 32x, on PASCAL VOC.

Run ``python models/voc-fcn-pool5/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment, single  # noqa: E402
from models.sources import voc  # noqa: E402
from netspec.ablations import fcn_pool  # noqa: E402

EXPERIMENT = Experiment(voc(), single(fcn_pool, dropout=False, pool=5))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
