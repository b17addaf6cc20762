"""The power curve of bench.ab redrawn from a power run's power.csv (the figure itself: bench.plots.power, the
one home of matplotlib).

    python -m bench.ab.figure DIR            # DIR/power.csv -> DIR/power.png
"""

import sys
from pathlib import Path

from bench.usage import Parser, fail, run_dir


def main(argv=None):
    p = Parser(prog="python -m bench.ab.figure", description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=run_dir, help="a power run's directory (python -m bench.ab.power --out DIR)")
    try:
        directory = p.parse_args(sys.argv[1:] if argv is None else argv).dir
        if not (directory / "power.csv").is_file():
            return fail(f"{directory}: no power.csv")
    except ValueError as error:
        return fail(error)
    from bench.plots.power import plot_power  # matplotlib only here

    print(plot_power(directory / "power.csv", Path(directory) / "power.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
