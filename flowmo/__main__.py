"""``python -m flowmo ...``: the ``flowmo`` command (see :mod:`flowmo.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
