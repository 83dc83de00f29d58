"""``upgrade_net_proto_binary IN OUT``: Caffe's tools/upgrade_net_proto_binary (see fcn.tools.upgrade)."""
import sys
from typing import Optional, Sequence

from fcn.tools.upgrade import NET_BINARY


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The console script; ``argv`` defaults to the command line."""
    return NET_BINARY.main(argv)


if __name__ == "__main__":
    sys.exit(main())
