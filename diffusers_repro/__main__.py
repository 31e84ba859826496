"""``python -m diffusers_repro``: the ``diffusers-repro`` command line (see `diffusers_repro.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
