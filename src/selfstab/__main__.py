"""``python -m selfstab …`` is the ``selfstab`` command (``torchrun -m selfstab …`` needs this form)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
