"""`python -m classical_music.train`: the same as the repo-root `python train.py`."""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
