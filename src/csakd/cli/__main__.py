"""``python -m csakd.cli``: the ``csakd`` command line."""

import sys

from csakd.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
