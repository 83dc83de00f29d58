"""pascalcontext-fcn16s: FCN-16s on PASCAL-Context from pascalcontext-fcn32s's trained weights.

Run ``python models/pascalcontext-fcn16s/solve.py`` (``--help`` for the weights, data and output paths).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages, as a script

from models.solve_common import CONTEXT, Recipe, main, stage  # noqa: E402

RECIPE = Recipe((stage("pascalcontext-fcn32s", "pascalcontext-fcn32s-heavy"),), CONTEXT)

if __name__ == "__main__":
    sys.exit(main(Path(__file__).parent, RECIPE))
