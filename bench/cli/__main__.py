"""``python -m bench.cli``: the same as the ``testbed`` command."""
import sys

from bench.cli import main

sys.exit(main())
