#!/usr/bin/env python
"""Same as `dsvl-data build ...` (thin wrapper; the logic lives in dsvl.data)."""
import sys

from dsvl.cli.data import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
