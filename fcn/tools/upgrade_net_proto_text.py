"""``upgrade_net_proto_text IN OUT``: Caffe's tools/upgrade_net_proto_text (see fcn.tools.upgrade)."""
import sys
from typing import Optional, Sequence

from fcn.tools.upgrade import NET_TEXT


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script; ``argv`` defaults to the command line."""
    return NET_TEXT.main(argv)


if __name__ == "__main__":
    sys.exit(main())
