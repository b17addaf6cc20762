"""python -m bench.analysis RUN [RUN ...]: each run's scaling findings with 95% intervals, written to RUN/findings.csv
and printed; with several runs of one grid, also each finding's median and range across them (findings.py)."""

import sys

from bench.analysis.findings import main, make_parser  # noqa: F401  (make_parser: the command's flags, for the docs' checks)

if __name__ == "__main__":
    sys.exit(main())
