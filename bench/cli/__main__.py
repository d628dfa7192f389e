"""``python -m bench.cli``: the same as the ``testbed`` command."""
import sys

from bench.cli import main

# Guarded: a process started with multiprocessing's spawn/forkserver re-imports the main
# module (as __mp_main__), and must not run the command again.
if __name__ == "__main__":
    sys.exit(main())
