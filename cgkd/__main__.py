"""``python -m cgkd`` (and ``torchrun ... -m cgkd``): the ``cgkd`` command."""

import sys

from cgkd.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
