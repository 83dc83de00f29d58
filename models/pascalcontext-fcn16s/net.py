"""pascalcontext-fcn16s: FCN-16s on PASCAL-Context's 59 classes (+ background: 60 scores).

Run ``python models/pascalcontext-fcn16s/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment, single  # noqa: E402
from models.sources import pascalcontext  # noqa: E402
from netspec.backbones import fcn16s  # noqa: E402

EXPERIMENT = Experiment(pascalcontext(), single(fcn16s, num_classes=60))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
