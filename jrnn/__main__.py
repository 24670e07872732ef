"""``python -m jrnn``: the ``jrnn`` command line (see :mod:`jrnn.apps.cli`)."""

import sys

from jrnn.apps.cli import main

if __name__ == "__main__":
  sys.exit(main())
