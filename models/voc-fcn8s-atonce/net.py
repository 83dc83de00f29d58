"""voc-fcn8s-atonce: FCN-8s on PASCAL VOC learned all at once from VGG16, its skips scaled
by fixed 0.01 (pool4) and 0.0001 (pool3) to condition the optimisation.

Run ``python models/voc-fcn8s-atonce/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment, single  # noqa: E402
from models.sources import voc  # noqa: E402
from netspec.backbones import fcn8s  # noqa: E402

EXPERIMENT = Experiment(voc(), single(fcn8s, skip_scales=(0.01, 0.0001)))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
