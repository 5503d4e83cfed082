#!/usr/bin/env python
"""Plot a dsvl run's curves: `python tools/plot_run.py RUN_DIR [-o out.png]`.

Reads the CSVLogger `metrics.csv` found under RUN_DIR and writes loss by modality, held-out text
perplexity, MC accuracy and the language ratio against step (logic in `dsvl.eval.plots`).
"""
from __future__ import annotations

import argparse
import sys

from dsvl.eval.plots import plot_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run directory (searched recursively for metrics.csv) or a metrics.csv")
    parser.add_argument("-o", "--output", default=None, help="PNG path (default RUN_DIR/curves.png)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        out = plot_run(args.run_dir, args.output, args.title)
    except (FileNotFoundError, ValueError) as e:
        print(f"plot_run: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
