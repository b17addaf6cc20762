"""Figures of a run, from its CSVs alone (pandas + matplotlib, no torch), then its REPORT.md.

    python -m bench.plots RUN_DIR              # figures in plots/<run_id>/ (mirrors results/...), RUN_DIR/REPORT.md
                                               # and RUN_DIR/findings.csv
    python -m bench.plots RUN_DIR --out DIR    # figures, REPORT.md and findings.csv in DIR; RUN_DIR left untouched

Only this package imports matplotlib, and within it only bench/plots/style.py does (the one door: the Agg
backend, colours, axes, saving). Every plot_xxx(df_or_run_dir, out_path, ...) returns the PNG written, or None
(with a note on stderr) when its CSV is absent or has no ok rows.
"""

from pathlib import Path

from bench import analysis, report
from bench.analysis import findings, ok
from bench.analysis.roofline import limits_of
from bench.plots.roofline import plot_roofline
from bench.plots.runtime import plot_decode, plot_numerics, plot_ops
from bench.plots.scaling import plot_conv_kernel, plot_flops, plot_gss_dss, plot_kernel_n, plot_memory, plot_time
from bench.plots.style import FALLBACK_COLOURS, MODEL_COLOURS, colour, note  # noqa: F401  (the public look)
from bench.plots.training import (
    plot_bpb,
    plot_curves,
    plot_lambda,
    plot_length_generalisation,
    plot_lr_selection,
    plot_recall,
)
from bench.plots.zoology import plot_zoology
from bench.results import ResultsError
from bench.usage import Parser, UsageError, fail
from bench.usage import run_dir as existing_run_dir


def render_all(run_dir, out_dir, *, found=None):
    """Every figure the run's CSVs allow; returns the PNGs written. found: the run's findings
    (bench.analysis.findings.of_run), for the time figures' crossover intervals; computed there when not given."""
    out_dir, written = Path(out_dir), []
    scaling = analysis.load_scaling(run_dir)
    if scaling is None or ok(scaling).empty:
        note(
            f"skipped scaling figures: scaling.csv {'absent or without rows' if scaling is None else 'has no ok rows'}"
        )
    else:
        pairs = analysis.modes_dtypes(scaling)
        written += [plot_time(scaling, out_dir / f"time_{m}_{d}.png", mode=m, dtype=d, found=found) for m, d in pairs]
        for mode in dict.fromkeys(m for m, _ in pairs):
            written += [
                plot_memory(scaling, out_dir / f"memory_{mode}.png", mode=mode),
                plot_flops(scaling, out_dir / f"flops_{mode}.png", mode=mode),
            ]
        written += [
            plot_kernel_n(scaling, out_dir / "ablation_kernel_N.png"),
            plot_conv_kernel(scaling, out_dir / "ablation_conv_kernel.png"),
            plot_roofline(scaling, out_dir / "roofline.png", limits=limits_of(run_dir)),
        ]
        if {"gss", "dss"} <= set(ok(scaling).model):
            written.append(plot_gss_dss(scaling, out_dir / "gss_vs_dss.png", found=found))
    for name, plot in FIGURES.items():
        written.append(plot(run_dir, out_dir / name))
    written.append(plot_zoology(run_dir, out_dir / "zoology_mqar.png"))  # only a run with a grid of widths has it
    return [p for p in written if p is not None]


FIGURES = {
    "lm_bits_per_byte.png": plot_bpb,
    "lm_lr_selection.png": plot_lr_selection,
    "lm_lambda_imag_exp.png": plot_lambda,
    "lm_train_curves.png": plot_curves,
    "lm_length_generalisation.png": plot_length_generalisation,
    "recall.png": plot_recall,
    "op_breakdown.png": plot_ops,
    "decode.png": plot_decode,
    "numerics.png": plot_numerics,
}


def make_parser():
    p = Parser(prog="python -m bench.plots", description="Figures and REPORT.md of a run, from its CSVs.")
    p.add_argument("run_dir")
    p.add_argument(
        "--out",
        help="directory for the figures and REPORT.md, leaving RUN_DIR untouched (default: "
        "figures in plots/<run_id>/, mirroring results/, and REPORT.md in RUN_DIR)",
    )
    return p


def main(argv=None):
    try:
        args = make_parser().parse_args(argv)
        run_dir = existing_run_dir(args.run_dir)
        out_dir = Path(args.out) if args.out else report.default_plots_dir(run_dir)
        found = findings.of_run(run_dir)  # first: a times_ms that does not parse stops before any figure
        for path in render_all(run_dir, out_dir, found=found):
            print(path)
        # with --out, REPORT.md and findings.csv go beside the figures: rendering a run elsewhere never rewrites it
        print(report.write_report(run_dir, plots_dir=out_dir, report_dir=out_dir if args.out else None, found=found))
    except (UsageError, ResultsError, OSError) as error:
        return fail(error)
    return 0
