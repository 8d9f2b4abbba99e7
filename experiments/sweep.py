"""Run a grid of training runs: a script shim for ``python -m glister_train sweep`` (see glister_train/sweep.py)."""

import sys

from glister_train.sweep import main

if __name__ == "__main__":
    sys.exit(main())
