"""REPORT.md of a run: environment, findings computed from its CSVs, figures, failed cells, how to reproduce.

    python -m bench.report RUN_DIR [--plots DIR]      # RUN_DIR/REPORT.md and findings.csv (no matplotlib, no torch)

The sections of findings, one per CSV, are in bench.report.sections (this file would be two ideas and
over 300 lines with them); here they are put together with what is not a finding.
"""

import json
import math
import os
import shlex
from pathlib import Path

from bench import analysis, usage
from bench.analysis import findings, summaries
from bench.report.sections import SECTIONS, scaling_section, table, tokens
from bench.results import REPO_ROOT, RESULTS_DIR
from bench.usage import Parser, fail


def default_plots_dir(run_dir):
    """plots/<run_id>/, mirroring results/ (results/baselines/x -> plots/baselines/x)."""
    run_dir = Path(run_dir).resolve()
    try:
        return REPO_ROOT / "plots" / run_dir.relative_to(RESULTS_DIR.resolve())
    except ValueError:
        return REPO_ROOT / "plots" / run_dir.name


def figures(plots_dir, report_dir, *patterns):
    """Markdown images of the PNGs present, linked relative to REPORT.md so the links work where it stands."""
    if plots_dir is None or not Path(plots_dir).is_dir():
        return []
    paths = [p for pattern in patterns for p in sorted(Path(plots_dir).glob(pattern))]
    return [f"![{p.stem}]({Path(os.path.relpath(p.resolve(), report_dir.resolve())).as_posix()})\n" for p in paths]


def shell_command(command):
    """env.json's commands are shlex.join(argv) with argv[0] 'python -m bench.x': paste-able again."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return command
    return " ".join([argv[0], shlex.join(argv[1:])]).strip() if argv else command


def environment_section(env, run_dir):
    if env is None:
        return ["## Environment", "", "No env.json in the run directory.", ""]
    gpus = env.get("cuda_devices") or []
    device = f"CUDA: {', '.join(gpus)}" if env.get("cuda_available") and gpus else "CPU only"
    commit = (env.get("git_commit") or "unknown")[:12] + (" (dirty)" if env.get("git_dirty") else "")
    rows = [
        ("run", env.get("config", {}).get("run_id") or Path(run_dir).name),
        ("device", device),
        ("torch", env.get("torch")),
        ("CUDA / cuDNN", f"{env.get('torch_cuda') or '-'} / {env.get('cudnn') or '-'}"),
        ("CPU", f"{env.get('cpu_model')} ({env.get('cpu_count')} cores, torch threads {env.get('torch_num_threads')})"),
        ("Python / platform", f"{env.get('python')} / {env.get('platform')}"),
        ("git commit", commit),
        ("when / host", f"{env.get('timestamp_utc')} / {env.get('hostname')}"),
    ]
    return ["## Environment", "", *table(["", ""], rows)]


def reproduce_section(env, run_dir, report_dir=None):
    suites = (env or {}).get("config", {}).get("suites", {})
    commands = [shell_command(s["command"]) for s in suites.values() if s.get("command")]
    top = shell_command(env["command"]) if env and env.get("command") else None
    if top and top not in commands:
        top = f"python {top}" if top.split()[0].endswith(".py") else top
        commands = ["# the whole run", top, "# or suite by suite", *commands]
    return [
        "## Reproduce",
        "",
        "```bash",
        *commands,
        "# re-render the figures and this report from the CSVs",
        f"python -m bench.plots {run_dir}" + (f" --out {report_dir}" if report_dir else ""),
        "```",
        "",
    ]


def failed_section(run_dir):
    failed = analysis.failed_cells(run_dir)
    lines = ["## Failed cells", ""]
    if failed.empty:
        return lines + ["None: every recorded cell ran (status ok).", ""]
    failed = failed.assign(seq_len=failed.seq_len.map(lambda v: tokens(v) if v != "" else ""))
    return lines + table(list(failed.columns), failed.itertuples(index=False))


def intervals_section(found):
    """findings.csv as a table: every finding with its 95% interval."""
    if found is None or found.empty:
        return []
    older = (
        " They are empty where the cells have no recorded repeats (`times_ms`: runs from before it was recorded)."
        if found.ci_low.isna().any()
        else ""
    )
    return [
        "### Findings with 95% intervals",
        "",
        "From `findings.csv` (`python -m bench.analysis`): each sweep's slope over its longest max(3, ⌈n/2⌉) "
        "lengths, the crossover of every two models that cross, each model's speed-up over attention at their "
        "longest common length, and gss's over dss and gss-fast's over gss at every length. Intervals: "
        f"2.5th..97.5th percentiles over {findings.RESAMPLES:,} bootstrap resamples of every cell's timed repeats: "
        "the noise within this run only (`python -m bench.analysis` with several runs gives each finding's range "
        f"across them).{older}",
        "",
        *table(list(findings.HEADER), findings.display(found)),
    ]


PAPER_MODELS = ("gss", "dss", "gss-hybrid", "attention", "attention-chunked")  # the GSS paper's comparison
PAPER_SPEEDUP = (2.0, 3.0)  # "2-3x speedup over vanilla DSS on TPUs"


def claim(low, high):
    """Whether a speed-up's 95% interval supports the paper's 2-3x: within, above or below it, or neither."""
    if low >= PAPER_SPEEDUP[0] and high <= PAPER_SPEEDUP[1]:
        return "within 2-3x"
    if low > PAPER_SPEEDUP[1] or high < PAPER_SPEEDUP[0]:
        return "above 3x" if low > PAPER_SPEEDUP[1] else "below 2x"
    return "overlaps the 2-3x edge"


def paper_section(run_dir, found, figs):
    """The GSS paper's comparisons: gss's speed-up over dss per mode and length, with intervals (findings.csv), and
    the bits/byte of gss, dss, gss-hybrid, attention and attention-chunked trained under the same protocol."""
    rows = None if found is None else found[(found.finding == "speedup") & (found.other == "dss")]
    ppl = analysis.load_csv(run_dir, "perplexity.csv")
    bpb = None if ppl is None else summaries.bpb_table(ppl)
    bpb = None if bpb is None else bpb[bpb.label.isin(PAPER_MODELS)]  # the comparison's cells, not an ablation's
    if (rows is None or rows.empty) and (bpb is None or bpb.empty):
        return [], []
    lines, bullets = (
        [
            "## The GSS paper's comparison: GSS, DSS and GSS-Hybrid",
            "",
            'The paper reports GSS "2-3x" faster than DSS on TPUs, and GSS-Hybrid (chunked attention in '
            "some layers) better in perplexity. Here on this run's device:",
            "",
        ],
        [],
    )
    if rows is not None and not rows.empty:
        shown = [
            (
                r.mode,
                r.dtype,
                r.detail.removeprefix("at seq_len "),
                f"{r.value:.2f}x",
                findings.interval(r.ci_low, r.ci_high, "x"),
                "" if math.isnan(r.ci_low) else claim(r.ci_low, r.ci_high),
            )
            for r in rows.itertuples()
        ]
        lines += table(["mode", "dtype", "seq_len", "dss time / gss time", "95% interval", "vs the paper"], shown)
        lines += figs("gss_vs_dss.png")
        for (mode, dtype), part in rows.groupby(["mode", "dtype"], sort=False):
            r = part.iloc[-1]
            bullets.append(
                f"GSS vs DSS, {mode} {dtype}: gss {r.value:.2f}x faster {r.detail} (95% "
                f"{findings.interval(r.ci_low, r.ci_high, 'x') or 'no interval'}; the paper: 2-3x on TPUs)"
            )
    if bpb is not None and not bpb.empty:
        lines += ["Test bits/byte at the training length (mean ± std over seeds, each model at its selected rate):", ""]
        lines += table(
            ["corpus", "model", "bits/byte", "seeds", "lr"],
            [(r.corpus, r.label, f"{r.mean:.3f} ± {r.std:.3f}", r.n, r.lr) for r in bpb.itertuples()],
        )
    return lines, bullets


def fast_section(run_dir, found):
    """gss-fast against gss, the same function: gss's time / gss-fast's per mode and length with its 95% interval
    (findings.csv's speedup rows with other = gss), and their peak memory at each length."""
    rows = (
        None
        if found is None
        else found[(found.finding == "speedup") & (found.model == "gss-fast") & (found.other == "gss")]
    )
    if rows is None or rows.empty:
        return [], []
    df = analysis.load_scaling(run_dir)

    def memory(mode, dtype, length):  # gss-fast's peak memory / gss's at one length of their length sweeps
        peak = analysis.sweeps(df, mode=mode, dtype=dtype, value="peak_mem_mb", models=["gss", "gss-fast"])
        fast, ref = (peak.get(m, {}).get(length, math.nan) for m in ("gss-fast", "gss"))
        return f"{fast / ref:.2f}" if ref > 0 and fast == fast else ""

    shown, bullets = [], []
    for r in rows.itertuples():
        length = int(r.detail.split("at seq_len ")[-1])
        shown.append(
            (
                r.mode,
                r.dtype,
                tokens(length),
                f"{r.value:.2f}x",
                findings.interval(r.ci_low, r.ci_high, "x"),
                memory(r.mode, r.dtype, length),
            )
        )
    for (mode, dtype), part in rows.groupby(["mode", "dtype"], sort=False):
        each = ", ".join(
            f"{r.value:.2f}x at {tokens(int(r.detail.split('at seq_len ')[-1]))}"
            f" ({findings.interval(r.ci_low, r.ci_high, 'x') or 'no interval'})"
            for r in part.itertuples()
        )
        bullets.append(f"gss-fast vs gss, {mode} {dtype} (the same function): {each}")
    lines = [
        "## gss-fast: gss's function, implemented faster",
        "",
        "gss-fast has gss's parameters and outputs (models/gss_fast.py: the kernel in real arithmetic, cached while "
        "autograd is off, the convolution's backward in real transforms; inference in place and, on the CPU, "
        "its position-wise part in blocks). Its speed-up over gss is gss's time / "
        "gss-fast's, paired over the rounds of each length's interleaved group, with its 95% interval:",
        "",
        *table(
            ["mode", "dtype", "seq_len", "gss time / gss-fast time", "95% interval", "gss-fast peak memory / gss's"],
            shown,
        ),
    ]
    return lines, bullets


STEADY = 0.25  # a median profiled / timed ratio further than this from 1: the machine's speed changed


def steadiness_section(run_dir):
    """The cells timed by the scaling suite and profiled later in the same run (bench.analysis.summaries.profile_drift):
    their time in each, and, when the median ratio is off by more than STEADY, a finding that the machine's
    speed changed during the run, so that the times of the suites after the scaling suite (profiling,
    decode) are not taken at face value."""
    drift = summaries.profile_drift(analysis.load_scaling(run_dir), analysis.load_csv(run_dir, "op_breakdown.csv"))
    if drift.empty:
        return [], []
    median = drift.ratio.median()
    rows = [
        (r.model, r.mode, tokens(r.seq_len), f"{r.time_ms:,.1f}", f"{r.step_ms:,.1f}", f"{r.ratio:.2f}")
        for r in drift.itertuples()
    ]
    lines = [
        "## Steadiness of the machine",
        "",
        "The same cells timed by the scaling suite and, minutes later, profiled (the profiler's own overhead "
        f"is a few percent): median profiled / timed {median:.2f} over {len(drift)} cells.",
        "",
    ]
    bullets = []
    if abs(median - 1) > STEADY:
        warning = (
            f"the machine's speed changed during the run: profiled steps took {median:.2f}x the scaling "
            "suite's time for the same cells; the times of the suites run after the scaling suite "
            "(profiling, decode) are suspect"
        )
        lines += [f"**Warning:** {warning}.", ""]
        bullets.append(warning)
    return lines + table(["model", "mode", "seq_len", "scaling ms", "profiled ms", "ratio"], rows), bullets


def write_report(run_dir, *, plots_dir=None, report_dir=None, found=None):
    """Writes REPORT.md into report_dir (default: the run directory) and returns its path; figures are
    embedded, linked relative to it, when plots_dir holds them. findings.csv (bench.analysis.findings; `found`, when
    already computed) is written beside it when the run has a scaling.csv. Nothing else is written."""
    run_dir = Path(run_dir)
    found = findings.of_run(run_dir) if found is None else found
    plots_dir = default_plots_dir(run_dir) if plots_dir is None else Path(plots_dir)
    where = run_dir if report_dir is None else Path(report_dir)
    env_path = run_dir / "env.json"
    env = json.loads(env_path.read_text(encoding="utf-8")) if env_path.exists() else None

    def figs(*patterns):
        return figures(plots_dir, where, *patterns)

    body, bullets = [], []
    for section in SECTIONS:
        lines, found_here = section(
            run_dir, figs, **(dict(intervals=intervals_section(found)) if section is scaling_section else {})
        )
        body += lines
        bullets += found_here
    for lines, found_here in (
        paper_section(run_dir, found, figs),
        fast_section(run_dir, found),
        steadiness_section(run_dir),
    ):
        body, bullets = body + lines, bullets + found_here
    run_id = (env or {}).get("config", {}).get("run_id") or run_dir.name
    head = [
        f"# GSS Bench report: {run_id}",
        "",
        "Every number below is computed from the run's CSVs by `bench/report/__init__.py`; figures are in "
        f"`{os.path.relpath(plots_dir.resolve(), where.resolve())}`.",
        "",
    ]
    head += ["## Findings", "", *(f"- {f}" for f in bullets), ""] if bullets else []
    text = "\n".join(
        head
        + environment_section(env, run_dir)
        + body
        + failed_section(run_dir)
        + reproduce_section(env, run_dir, report_dir)
    )
    if report_dir is not None:  # beside figures that may not exist yet
        where.mkdir(parents=True, exist_ok=True)
    if found is not None:
        findings.write(run_dir, out_dir=where, found=found)
    path = where / "REPORT.md"
    path.write_text(text.rstrip() + "\n", encoding="utf-8")
    return path


def make_parser():
    p = Parser(prog="python -m bench.report", description="REPORT.md of a run, from its CSVs.")
    p.add_argument("run_dir")
    p.add_argument("--plots", help="figure directory to embed (default: plots/<run_id>/, mirroring results/)")
    return p


def main(argv=None):
    try:
        args = make_parser().parse_args(argv)
        print(write_report(usage.run_dir(args.run_dir), plots_dir=args.plots))
    except (ValueError, OSError) as error:  # a UsageError, a malformed CSV (ResultsError), an env.json not JSON
        return fail(error)
    return 0
