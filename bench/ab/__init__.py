"""The same-job A/B gate: the base revision's layers and the change's timed side by side, in paired rounds.

    python -m bench.ab BASE [HEAD]      # HEAD: the working tree, uncommitted changes included
    python -m bench.ab HEAD~1 --models conv --seq-lens 64 --dim 32 --modes fwd

BASE and HEAD each name a git revision or a directory holding a models/ package; each side's models/ is loaded
from its own tree (a revision exported into a temporary directory, removed when the run ends, Ctrl-C included)
under a package name of its own, and both are measured by this harness: cells, steps, timers, so what differs
between the sides is the model code. Every round of a cell runs the base's step and the head's back to back,
the order alternating (ABBA), after each side's warm-ups (bench.core.paired). Per cell: the median of the
per-round ratios head / base, its distribution-free 95% interval (order statistics), and a verdict: regression
(interval wholly above 1 and ratio above 1 + --threshold/100), improvement (likewise below), same, one-sided
(the model or an option is missing at one side) or error (a side failed). A regression or an improvement is
measured again from layers built afresh (confirm_* columns) and stands only where that measurement gives it
too. Rows go to DIR/ab.csv as they are measured, both sides to DIR/env.json; the table is printed worst first.
Exit 0: no regression; 1: a regression; 2: cannot compare (bad input, or a side's models/ does not import), one
line on stderr.
"""

import contextlib
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import usage
from bench.ab import sides
from bench.ab.verdict import (
    CONFIRM_BUDGET,
    CONFIRM_COLUMNS,
    FLAGGED,
    SIDE_COLUMNS,
    THRESHOLD_PCT,
    compared,
    confirmed,
    label,
    table,
)
from bench.core import cli
from bench.core.config import ALL, DEVICES, SCALING_PRESETS, Grid, Preset, layer_cells
from bench.core.env import write_env
from bench.core.paired import MIN_ROUNDS, measure_pairs
from bench.core.sweep import device_name
from bench.results import REPO_ROOT, RESULTS_DIR, ResultsError, RowWriter, ensure_writable_dir, new_run_id
from bench.schema import TABLES
from bench.usage import Parser, UsageError, fail

CSV = "ab.csv"
KEY = TABLES["scaling.csv"].key
COLUMNS = (
    *KEY,
    "ratio",
    "ci_low",
    "ci_high",
    "rounds",
    "verdict",
    *(f"{c}_{role}" for c in SIDE_COLUMNS for role in sides.ROLES),
    "error",
    "ratios",
    "clock",
    "graph_note",
    *CONFIRM_COLUMNS,
)
GATE_PRESETS = {
    # CPU: every layer at a short and a longer length, forward and forward + backward, at the width and batch of
    # the CPU reference. The budget is per cell, both sides' rounds together.
    "gate": Preset("gate", (Grid("gate", ALL, (256, 1024)),), timing=dict(warmup=2, min_repeats=10, budget_s=4.0)),
    # One GPU: the full preset's batch and width at two lengths
    "gate-cuda": Preset(
        "gate-cuda",
        (Grid("gate", ALL, (2048, 8192), batch=4, dim=1024),),
        timing=dict(warmup=3, min_repeats=10, budget_s=2.0),
    ),
}
PRESETS = {**GATE_PRESETS, **SCALING_PRESETS}


@dataclass(frozen=True)
class AbSpec:
    """One comparison, resolved and checked: the two sides, the cells, how long a cell may take, where rows go."""

    base: sides.Source
    head: sides.Source
    device: torch.device
    preset: Preset
    cells: tuple
    out_dir: Path
    threshold_pct: float = THRESHOLD_PCT
    budget_s: float | None = None  # None: the preset's
    command: tuple = ()

    @property
    def timing(self):
        """measure_pairs' keyword arguments: the preset's warm-ups, rounds and budget (at least MIN_ROUNDS)."""
        timing = self.preset.timing
        return dict(
            warmup=timing.get("warmup", 2),
            min_rounds=max(MIN_ROUNDS, timing.get("min_repeats", MIN_ROUNDS)),
            max_rounds=max(MIN_ROUNDS, timing.get("max_repeats", 200)),
            budget_s=self.budget_s or timing.get("budget_s", 4.0),
        )

    def describe(self):
        """What env.json records of the comparison."""
        return {
            "base": self.base.describe(),
            "head": self.head.describe(),
            "device": str(self.device),
            "preset": self.preset.describe(),
            "threshold_pct": self.threshold_pct,
            "timing": self.timing,
        }


def add_selection(p):
    """The cell selection and timing flags of bench.ab and bench.ab.power: the scaling suite's layer flags."""
    p.add_argument("--preset", help="named preset (default: gate on CPU, gate-cuda on CUDA; or a scaling preset)")
    device = usage.value_of(usage.one_of(DEVICES, "device"), "device")
    p.add_argument("--device", default="auto", type=device, help="cpu, cuda or auto (default)")
    p.add_argument("--threads", type=usage.value_of(usage.positive_int, "threads"), help="torch CPU threads")
    for flag in cli.LAYER_FLAGS:
        text, convert = cli.FLAGS[flag]
        p.add_argument(flag, type=convert, help=text)
    p.add_argument("--compile", action="store_true", help="torch.compile the layer")
    p.add_argument(
        "--threshold",
        type=usage.value_of(usage.positive_number, "threshold"),
        default=THRESHOLD_PCT,
        metavar="PCT",
        help=f"a regression's ratio exceeds 1 + PCT/100 (default {THRESHOLD_PCT:g})",
    )
    p.add_argument(
        "--budget",
        type=usage.value_of(usage.positive_number, "budget"),
        metavar="SECONDS",
        help="a cell's time for its paired rounds; ten rounds run whatever it is (default: the preset's)",
    )
    p.add_argument("--out", help="run directory (default: results/<run_id>/)")


def make_parser():
    p = Parser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("base", metavar="BASE", help="a git revision, or a directory holding models/")
    p.add_argument("head", metavar="HEAD", nargs="?", help="likewise (default: the working tree)")
    p.add_argument("--repo", default=str(REPO_ROOT), help="the git checkout revisions are found in (default: this)")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    add_selection(p)
    return p


SELECTION = ("models", "seq_lens", "kernel_n", "kernel_h", "lambda_imag_exp", "conv_kernel", "modes", "dtype")


def make_spec(args, base, head, command=()):
    """The comparison of `base` and `head` (Sources) from the parsed selection flags `args` (a dict). UsageError on
    bad input; nothing is written."""
    device = cli.device_for(args["device"], args.get("dtype"))
    name = usage.choice(args.get("preset") or ("gate-cuda" if device.type == "cuda" else "gate"), "preset", PRESETS)
    flags = {k: args.get(k) for k in (*SELECTION, "batch", "dim")}
    cells = layer_cells(PRESETS[name], compile=args.get("compile", False), **flags)
    out = Path(args["out"]) if args.get("out") else RESULTS_DIR / new_run_id()
    if (out / CSV).exists():
        raise UsageError(f"{out / CSV} exists; pass another --out")
    return AbSpec(
        cells=tuple(cells),
        base=base,
        head=head,
        device=device,
        preset=PRESETS[name],
        out_dir=out,
        threshold_pct=args.get("threshold") or THRESHOLD_PCT,
        budget_s=args.get("budget"),
        command=tuple(command),
    )


def compare(cell, base, head, spec):
    """One cell's ab.csv row: each side's step prepared (a side without the cell's model or options leaves it
    one-sided; a failure is an error), then the two timed in paired rounds. A cell flagged (regression or
    improvement) is measured again, both layers built afresh, the head's first this time, with CONFIRM_BUDGET
    times the cell's budget; the flag stands only where the second measurement gives it too (verdict.confirmed)."""
    key = cell.key_row(device_name(spec.device))
    row, errors = dict(key), []
    steps = prepared_steps(cell, (base, head), spec.device, row, errors)
    if len(steps) == 2:
        try:
            row.update(paired_rounds(steps, spec))
            if row["verdict"] in FLAGGED:
                steps.clear()  # the first layers go before the second are built
                again = {side.role: side.prepare(cell, spec.device).step for side in (head, base)}
                row.update(confirmed(row, paired_rounds(again, spec, budget_factor=CONFIRM_BUDGET)))
        except Exception as error:
            errors.append(f"rounds: {type(error).__name__}: {error}")
            row["verdict"] = "error"
    row.setdefault("verdict", "error" if errors else "one-sided")
    return {**row, "error": "; ".join(errors)}


def prepared_steps(cell, sides_, device, row, errors):
    """{role: step} of the sides that take the cell and prepare it; each one's counted columns into `row`, each
    failure's message into `errors`."""
    steps = {}
    for side in sides_:
        if not side.takes(cell):
            continue
        try:
            prepared = side.prepare(cell, device)
        except Exception as error:  # this side fails at this cell; the run goes on
            errors.append(f"{side.role}: {type(error).__name__}: {error}")
            continue
        steps[side.role] = prepared.step
        row.update({f"{c}_{side.role}": getattr(prepared, c) for c in ("params", "flops", "peak_mem_mb")})
        row[f"min_bytes_{side.role}"] = "" if prepared.min_bytes is None else prepared.min_bytes
    return steps


def paired_rounds(steps, spec, budget_factor=1.0):
    """compared()'s columns, with the clock and graph note, of the base's and head's steps in paired rounds (each
    round replays both sides' CUDA graphs where both capture), within budget_factor times the cell's budget."""
    timing = {**spec.timing, "budget_s": spec.timing["budget_s"] * budget_factor}
    graphs = spec.device.type == "cuda"
    paired = measure_pairs(steps["base"], steps["head"], device=spec.device, replay_graphs=graphs, **timing)
    return dict(
        compared(paired.base_ms, paired.head_ms, spec.threshold_pct), clock=paired.clock, graph_note=paired.note
    )


def run(spec, *, quiet=False):
    """Load both sides, measure every cell into spec.out_dir/ab.csv (and env.json), and return the rows. The run
    directory is made only once both sides load (sides.LoadError otherwise)."""
    rows = []
    with sides.opened((spec.base, spec.head)) as (base, head):
        ensure_writable_dir(spec.out_dir)
        config = {"run_id": spec.out_dir.resolve().name, "ab": spec.describe()}
        write_env(spec.out_dir, config=config, argv=spec.command or ("python -m bench.ab",))
        with RowWriter(spec.out_dir / CSV, COLUMNS) as writer:
            for i, cell in enumerate(spec.cells, 1):
                rows.append(row := compare(cell, base, head, spec))
                writer.append(row)
                if not quiet:
                    print(f"ab [{i}/{len(spec.cells)}] {_progress(row)}", file=sys.stderr, flush=True)
    return rows


def _progress(row):
    name = label({k: row[k] for k in ("model", "mode", "dtype", "seq_len")})
    if "ratio" not in row:
        return f"{name}: {row['verdict']} {row['error']}".rstrip()
    measured = [_measured(row, "")]
    if "confirm_ratio" in row:
        measured.append(f"measured again {_measured(row, 'confirm_')}")
    return f"{name}: {'; '.join(measured)}: {row['verdict']}"


def _measured(row, prefix):
    interval = f"({row[prefix + 'ci_low']:.3f}..{row[prefix + 'ci_high']:.3f})"
    return f"{row[prefix + 'ratio']:.3f} {interval}, {row[prefix + 'rounds']} rounds"


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so that the exports are removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = vars(make_parser().parse_args(argv))
        repo = Path(args["repo"])
        base, head = sides.resolve(args["base"], "base", repo), sides.resolve(args["head"], "head", repo)
        spec = make_spec(args, base, head, command=("python -m bench.ab", *argv))
    except (UsageError, ResultsError, ValueError) as error:  # ValueError: the registry's option checks
        return fail(error)
    if args["list"]:
        for cell in spec.cells:
            print(label(cell.key_row(device_name(spec.device))))
        print(f"{len(spec.cells)} cells", file=sys.stderr)
        return 0
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    try:
        with sigterm_as_interrupt():
            rows = run(spec)
    except sides.LoadError as error:
        return fail(f"cannot compare: {error}")
    except ResultsError as error:  # an unwritable run directory
        return fail(error)
    except KeyboardInterrupt:
        print("ab: interrupted; the rows measured so far are in ab.csv", file=sys.stderr)
        return 130
    print(table(rows))
    print(spec.out_dir / CSV)
    return 1 if any(r["verdict"] == "regression" for r in rows) else 0
