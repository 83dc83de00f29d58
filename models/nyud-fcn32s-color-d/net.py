"""nyud-fcn32s-color-d: FCN-32s on NYUDv2 color and log depth stacked into 4 channels
(early fusion), 40 classes.

Run ``python models/nyud-fcn32s-color-d/net.py`` to rewrite this folder's prototxts (``--help`` for paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.experiment import Experiment  # noqa: E402
from models.sources import nyud  # noqa: E402
from netspec.fusion import early_fusion_fcn32s  # noqa: E402

EXPERIMENT = Experiment(nyud("color", "depth"), lambda n, deploy: early_fusion_fcn32s(
    n, [n.color, n.depth], "conv1_1_bgrd", None if deploy else n.label, dropout=not deploy))

if __name__ == "__main__":
    EXPERIMENT.main(Path(__file__).parent)
