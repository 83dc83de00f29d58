"""``python -m fcn``: the same as the ``fcn`` command."""
import sys

from fcn.cli import command

sys.exit(command())
