"""``python -m flowmo.cli ...``: the ``flowmo`` command, as ``python -m flowmo``."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
