"""nyud-fcn32s-color-hha: NYUDv2 late fusion (color, HHA) from the two single-modality nets.

The color stream (layers suffixed 'color') from nyud-fcn32s-color, the HHA stream ('hha') from
nyud-fcn32s-hha.

Run ``python models/nyud-fcn32s-color-hha/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import NYUD, Recipe, late_fusion, main, stage  # noqa: E402

RECIPE = Recipe((stage("nyud-fcn32s-color", "nyud-fcn32s-color-heavy", "COLOR"),
                 stage("nyud-fcn32s-hha", "nyud-fcn32s-hha-heavy", "HHA")), NYUD,
                late_fusion("color", "hha"))

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
