"""``python -m locallearn``: the same command line as the ``locallearn`` script."""

import sys

from locallearn.cli import main

if __name__ == "__main__":
    sys.exit(main())
