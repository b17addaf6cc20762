"""Scaling suite: time, peak memory and FLOPs of one layer per cell, across lengths and kernel sizes.

    python -m bench.scaling                      # the device's default preset (quick on CPU, full on CUDA)
    python -m bench.scaling --models gss,attention --seq-lens 1024,4096 --modes fwdbwd --list

The cells a finding compares (every model and option set at one length, mode and dtype: config.group_key)
are measured as a group, their timed repeats interleaved (bench.core.timing.measure_group), so that a drift of
the machine falls on all of them alike. Rows go to DIR/scaling.csv group by group, each with every timed
repeat (`times_ms`); a failed cell is a row (oom / error / skipped) and the sweep goes on. --resume
continues a killed run without repeating or losing a cell.
"""

import math
import sys
import time
from dataclasses import dataclass, replace

from bench import usage
from bench.analysis import refine
from bench.core import cli
from bench.core.config import LAYER_KEY, SCALING_PRESETS, group_key, groups_of, layer_cells, shard_groups
from bench.core.graphs import graph_columns, graph_time
from bench.core.prepare import Prepared, prepare_cell
from bench.core.sweep import Sweep, device_name, run_jobs
from bench.core.timing import Timing, gauge_step, measure_group
from bench.floors import floor_ms
from bench.results import RowWriter, atomic_path, cell_key, read_rows
from bench.schema import CROSSOVER_PAIR, TABLES, full_taps
from bench.stats import format_times

CSV = "scaling.csv"
REFINE_ROUND = 5  # repeats of each refined cell between two looks at the crossover's interval
MEMORY_HEADROOM = 0.8  # on CPU, a cell predicted to need more than this share of free memory is skipped


def row_of(prepared, timing, limits=None, graph=None):
    """A measured cell's row: what was counted and weighed, its repeats, and its roofline floor against the
    machine's `limits` (bench.core.limits; none: the floor columns stay empty). `graph`: on CUDA, the step's
    graph-replayed time (bench.core.graphs.graph_time: a GraphTiming, or the reason it has none), its gpu columns,
    against which roofline_frac is taken where it has one; None (CPU, a re-summary): no gpu columns."""
    cell = prepared.cell
    floor = floor_ms(prepared.flops, prepared.min_bytes, cell.dtype, limits)
    gpu = {} if graph is None else graph_columns(graph)
    return dict(
        params=prepared.params,
        flops=prepared.flops,
        **timing_columns(timing, prepared.flops, cell.batch * cell.seq_len, floor, gpu.get("gpu_ms") or None),
        peak_mem_mb=prepared.peak_mem_mb,
        status="ok",
        min_bytes="" if prepared.min_bytes is None else prepared.min_bytes,
        floor_ms="" if floor is None else floor,
        **gpu,
    )


def timing_columns(timing, flops, tokens, floor=None, gpu_ms=None):
    """A row's columns that come from its repeats (and the gauge's times in their rounds, when it has them); with
    the cell's roofline `floor` (ms), the share of it the step reached: its graph-replayed `gpu_ms` where it has
    one (CUDA), else its median eager step."""
    seconds = timing.median_ms / 1e3
    return dict(
        roofline_frac="" if floor is None else floor / (gpu_ms or timing.median_ms),
        tflops_per_s=flops / seconds / 1e12,
        tokens_per_s=tokens / seconds,
        time_ms=timing.median_ms,
        time_iqr_ms=timing.iqr_ms,
        repeats=timing.repeats,
        times_ms=format_times(timing.times_ms),
        gauge_times_ms=format_times(timing.gauge_ms if len(timing.gauge_ms) == timing.repeats else ()),
    )


def measure_cells(cells, timing, limits, device):
    """A group's cells measured together: each prepared in turn (a failure is that cell's), then their steps
    timed with interleaved repeats and the drift gauge in every round (bench.core.timing.measure_group); on CUDA,
    then each ok cell's step replayed from a CUDA graph, one cell after the other (bench.core.graphs.graph_time).
    Per cell, its row's measured columns (its floor against `limits`) or the exception it raised."""
    prepared = []
    for cell in cells:
        try:
            prepared.append(prepare_cell(cell, device))
        except Exception as error:
            prepared.append(error)
    steps = [p.step for p in prepared if isinstance(p, Prepared)]
    timings = iter(measure_group(steps, device=device, gauge=gauge_step(device), **timing))
    out = [p if isinstance(p, Exception) else next(timings) for p in prepared]  # each cell's timing or failure
    graphed = device.type == "cuda"
    return [
        row_of(p, t, limits, graph_time(p.step, device=device) if graphed else None) if isinstance(t, Timing) else t
        for p, t in zip(prepared, out)
    ]


def free_memory_mb():
    """MemAvailable from /proc/meminfo (Linux); None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def predicted_peak_mb(history, seq_len):
    """Extrapolate a series' measured peaks (seq_len -> MiB) to seq_len, between linear and quadratic."""
    points = sorted(history.items())
    if not points:
        return None
    (l1, p1) = points[-1]
    exponent = 2.0
    if len(points) > 1 and points[-2][1] > 0 and p1 > 0:
        (l0, p0) = points[-2]
        exponent = min(2.0, max(1.0, math.log(p1 / p0) / math.log(l1 / l0)))
    return p1 * (seq_len / l1) ** exponent


class ScalingSweep(Sweep):
    """The shared sweep, plus the CPU memory guard: exhausting memory on CPU kills the process instead of
    raising, so a cell whose peak, extrapolated from the series' shorter lengths, would not fit is skipped."""

    def __init__(self, **kwargs):
        self.peaks = {}  # series -> {seq_len: peak MiB}
        super().__init__(CSV, **kwargs)

    def series_of(self, row):
        """Taps covering the whole length are one series ("full"), so an OOM or the memory guard of gss-direct
        with every tap carries over to its longer lengths."""
        full = full_taps(row["conv_kernel"], row["seq_len"])
        return cell_key({**row, "conv_kernel": "full"} if full else row, self.series)

    def remember(self, row):
        super().remember(row)
        if row["status"] == "ok" and row["peak_mem_mb"] not in ("", None):
            self.peaks.setdefault(self.series_of(row), {})[int(row["seq_len"])] = float(row["peak_mem_mb"])

    def skip_reason(self, key_row):
        reason = super().skip_reason(key_row)
        if reason is None and self.device.type == "cpu":
            predicted = predicted_peak_mb(self.peaks.get(self.series_of(key_row), {}), key_row["seq_len"])
            free = free_memory_mb()
            if predicted is not None and free is not None and predicted > MEMORY_HEADROOM * free:
                reason = f"predicted peak {predicted:.0f} MiB exceeds {MEMORY_HEADROOM:.0%} of {free:.0f} MiB free"
        return reason


@dataclass(frozen=True)
class ScalingSpec(cli.RunSpec):
    """A scaling run: the shared spec, and --crossover-ci (None: the preset's; 0: no refinement)."""

    crossover_ci: float | None = None

    @property
    def refine(self):
        """The crossover refinement's settings: the preset's, --crossover-ci replacing its ci."""
        return {**self.preset.refine, **({} if self.crossover_ci is None else {"ci": self.crossover_ci})}


def make_spec(common, crossover_ci=None, **flags):
    """The run of the common settings (cli.Common) and the layer flags' values (config.layer_cells); a shard
    holds whole groups."""
    spec = cli.build("scaling", common, flags, SCALING_PRESETS, layer_cells, shard=shard_groups, kind=ScalingSpec)
    return replace(spec, crossover_ci=crossover_ci)


def run(spec):
    """Measure the spec's cells into its run directory, group by group; returns the path of the CSV."""
    sweep, name = ScalingSweep(**spec.sweep_args), device_name(spec.device)
    jobs = [
        sweep.group_job(
            [cell.key_row(name) for cell in group],
            lambda pending, group=group: (
                measure_cells,
                ([group[i] for i in pending], spec.preset.timing, spec.limits),
            ),
        )
        for group in groups_of(spec.cells)
    ]
    if run_jobs(jobs, spec, desc="scaling", unit="group") == 0:
        sweep.writer.close()
        if spec.refine.get("ci") and spec.common.shard is None:  # a shard may not hold a crossover's bracket
            try:
                refine_crossovers(spec, name, **spec.refine)
            except Exception as error:  # the sweep's rows stand as they are
                print(f"scaling: crossover refinement failed ({type(error).__name__}: {error})", file=sys.stderr)
    return spec.out_dir / CSV


def refine_crossovers(spec, device_name, *, ci, pairs=(CROSSOVER_PAIR,), budget_s=60.0, clock=time.monotonic):
    """After the sweep: every crossover of `pairs` whose 95% interval is wider than +-ci (analysis.refine) has its four
    bracketing cells (the two models at the two lengths around it) measured again as one group, REFINE_ROUND
    interleaved repeats at a time, until the interval is within +-ci, or its budget_s (or the run's --time-limit)
    is spent, or the timing's max_repeats; their rows, the sweep's paired rounds and the refinement's
    (remeasure), replace theirs in the CSV (at once: the file is the old one or the new). The other cells of those
    lengths keep the sweep's rounds that the refined cells ran too, so that round i is one round of every cell that
    has it (a ratio with a refined cell pairs the rounds both ran): a round of the refinement costs four cells, not
    every model's. A bracket is refined once."""
    path, cells = spec.out_dir / CSV, {cell_key(c.key_row(device_name), LAYER_KEY): c for c in spec.cells}
    timing, tried = dict(spec.preset.timing), set()
    while clock() < (spec.deadline or math.inf):
        end = min(clock() + budget_s, spec.deadline or math.inf)  # each crossover its own budget
        rows = read_rows(path)
        before = next_to_refine(rows, pairs, ci, tried, cells)
        if before is None:
            return
        tried.add(keys := bracket_keys(before))
        groups = {group_key(cells[k]) for k in keys}
        members = [r for r in rows if r["status"] == "ok" and cell_key(r, LAYER_KEY) in keys]
        new, after = remeasure(
            [cells[cell_key(r, LAYER_KEY)] for r in members],
            members,
            before,
            rows,
            spec.device,
            timing,
            ci=ci,
            end=end,
            clock=clock,
            limits=spec.limits,
        )
        with atomic_path(path) as tmp, RowWriter(tmp, TABLES[CSV].columns) as writer:
            for row in rows:
                writer.append(new.get(cell_key(row, LAYER_KEY), row))
        print(
            f"scaling: refined {before.describe()} -> {after.describe() if after else 'no crossover'}, its "
            f"{len(members)} cells at {len(groups)} lengths re-measured together, "
            f"{'/'.join(str(new[k]['repeats']) for k in keys[::2])} paired rounds a cell",
            file=sys.stderr,
        )


def next_to_refine(rows, pairs, ci, tried, cells):
    """The first crossover wider than +-ci whose bracket was not tried and is among the run's cells, or None."""
    for crossover in refine.wide(rows, pairs, ci):
        keys = bracket_keys(crossover)
        if keys not in tried and all(k in cells for k in keys):
            return crossover
    return None


def bracket_keys(crossover):
    return tuple(cell_key(row, LAYER_KEY) for row in crossover.bracket)


def remeasure(cells, old_rows, before, rows, device, timing, *, ci, end, clock, limits=None):
    """The new rows ({key: row}) of the refined cells (`cells`, their `old_rows`) and of the other cells of their
    groups, and the crossover they give (None if it is gone). Every ok cell of a refined group keeps the sweep's
    rounds that all the refined cells of its group ran, its gauge times alike (refine.aligned_rounds); the refined
    cells add the refinement's rounds, the drift gauge timed in each: round i of any two cells of a group stays one
    round, as the paired ratios need."""
    prepared, gauge = [prepare_cell(cell, device) for cell in cells], gauge_step(device)
    kept = refine.aligned_rounds(rows, [refine.label(old) for old in old_rows])
    times, gauges = (list(x) for x in zip(*(map(list_or_none, kept[refine.label(old)]) for old in old_rows)))
    warmup, after, n = timing.get("warmup", 1), None, 0
    new = {  # the other cells of the groups, where the cut shortened them
        cell_key(row, LAYER_KEY): cut_row(row, *kept[refine.label(row)])
        for row in rows
        if refine.label(row) in kept and len(kept[refine.label(row)][0]) < len(refine.times_of(row))
    }
    while True:
        results = measure_group(
            [p.step for p in prepared],
            device=device,
            warmup=warmup,
            min_repeats=REFINE_ROUND,
            max_repeats=REFINE_ROUND,
            gauge=gauge,
        )
        for i, result in enumerate(results):
            if isinstance(result, Exception):
                raise result
            times[i].extend(result.times_ms)
            if gauges[i] is not None and len(result.gauge_ms) == result.repeats:
                gauges[i].extend(result.gauge_ms)
            else:
                gauges[i] = None  # a gauge time missing beside a repeat: none for this cell
        warmup, n = 0, n + results[0].repeats
        new |= {
            cell_key(old, LAYER_KEY): {**old, **row_of(p, Timing.of(t, gauge_ms=g or ()), limits), **kept_gpu(old)}
            for old, p, t, g in zip(old_rows, prepared, times, gauges, strict=True)
        }
        after = next(
            (
                c
                for c in refine.crossovers(
                    [new.get(cell_key(r, LAYER_KEY), r) for r in rows], [(before.fast, before.slow)]
                )
                if c.pair() == before.pair()
            ),
            None,
        )
        if n >= timing.get("min_repeats", 10) and (
            after is None or after.within(ci) or clock() >= end or n >= timing.get("max_repeats", 200)
        ):
            return new, after


def list_or_none(values):
    return None if values is None else list(values)


def cut_row(row, times, gauge):
    """A row (as read) re-summarised over its first rounds: `times` and their `gauge` times (or None)."""
    tokens, floor = int(row["batch"]) * int(row["seq_len"]), row.get("floor_ms")
    floor = float(floor) if floor not in ("", None) else None
    timing = timing_columns(Timing.of(times, gauge_ms=gauge or ()), float(row["flops"]), tokens, floor)
    return {**row, **timing, **kept_gpu(row)}


def kept_gpu(row):
    """What a re-summary of a row's eager repeats leaves as it was: a row with a graph-replayed gpu_ms keeps its
    roofline_frac, taken against it (the refinement re-measures eager rounds only)."""
    return {} if row.get("gpu_ms") in ("", None) else {"roofline_frac": row["roofline_frac"]}


def make_parser():
    crossover_ci = (
        f"FRACTION: re-measure the cells around a {'/'.join(CROSSOVER_PAIR)} crossover until its 95%% interval is "
        "within +-FRACTION of it (default: the preset's, 0.15 in quick and full; 0: off)"
    )
    return cli.parser(__doc__, "python -m bench.scaling", cli.LAYER_FLAGS, crossover_ci=(crossover_ci, _fraction))


def _fraction(text):
    """--crossover-ci: a positive fraction, or 0 (no refinement)."""
    return 0.0 if text.strip() in ("0", "0.0") else usage.positive_number(text, "crossover-ci")


def main(argv=None):
    return cli.main(make_parser(), argv, make_spec, run)
