"""nyud-fcn32s-hha: FCN-32s on NYUDv2 HHA depth encodings, 40 classes.

Run ``python models/nyud-fcn32s-hha/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment, single  # noqa: E402
from models.sources import nyud  # noqa: E402
from netspec.backbones import fcn32s  # noqa: E402

EXPERIMENT = Experiment(nyud("hha"), single(fcn32s, num_classes=40))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
