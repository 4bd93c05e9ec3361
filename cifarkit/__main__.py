"""``python -m cifarkit``: the command line."""

import sys

from cifarkit.cli import main

sys.exit(main())
