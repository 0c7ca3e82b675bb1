"""``python -m csakd`` (and ``torchrun -m csakd``): the ``csakd`` command line."""

import sys

from csakd.cli import main

if __name__ == "__main__":
    sys.exit(main())
