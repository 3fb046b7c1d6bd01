"""``python -m twotower ...`` is the ``twotower`` command (useful from a checkout without the console script)."""
import sys

from twotower.cli import main

if __name__ == "__main__":
    sys.exit(main())
