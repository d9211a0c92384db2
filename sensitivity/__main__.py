"""``python -m sensitivity``: the same command line as the ``sensitivity`` script."""

import sys

from sensitivity.cli import main

sys.exit(main())
