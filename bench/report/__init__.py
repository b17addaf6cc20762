"""REPORT.md of a run: environment, findings computed from its CSVs, figures, failed cells, how to reproduce.

    python -m bench.report RUN_DIR [--plots DIR]      # RUN_DIR/REPORT.md and findings.csv (no matplotlib, no torch)

The document is put together here: its head, the environment, the sections of findings in order (speed.py: the
scaling sweeps, gss-fast; profiled.py: the op breakdown, decoding, the machine's steadiness; roofline.py: the
distance from the machine's limits; quality.py: language modelling, recall, numerics; zoology.py: Zoology's MQAR
grid; paper.py: the GSS paper's comparison), the failed cells and the commands to reproduce the run.
"""

import os
import shlex
from pathlib import Path

from bench import analysis, usage
from bench.analysis import findings
from bench.report import paper, profiled, quality, roofline, speed, zoology
from bench.report.markdown import table, tokens
from bench.results import REPO_ROOT, RESULTS_DIR, read_env
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


# In REPORT.md's order; each is section(run_dir, figs, found): figs(*patterns) gives the Markdown images of the
# figures that match, found is the run's findings.csv (None without a scaling.csv); it returns (Markdown lines,
# findings), empty when there is nothing to report.
SECTIONS = (
    speed.scaling_section,
    quality.lm_section,
    quality.recall_section,
    zoology.zoology_section,
    profiled.ops_section,
    roofline.roofline_section,
    profiled.decode_section,
    quality.numerics_section,
    paper.paper_section,
    speed.fast_section,
    profiled.steadiness_section,
)


def write_report(run_dir, *, plots_dir=None, report_dir=None, found=None):
    """Writes REPORT.md into report_dir (default: the run directory) and returns its path; figures are
    embedded, linked relative to it, when plots_dir holds them. findings.csv (bench.analysis.findings; `found`, when
    already computed) is written beside it when the run has a scaling.csv. Nothing else is written."""
    run_dir = Path(run_dir)
    found = findings.of_run(run_dir) if found is None else found
    plots_dir = default_plots_dir(run_dir) if plots_dir is None else Path(plots_dir)
    where = run_dir if report_dir is None else Path(report_dir)
    env = read_env(run_dir, strict=True)

    def figs(*patterns):
        return figures(plots_dir, where, *patterns)

    body, bullets = [], []
    for section in SECTIONS:
        lines, found_here = section(run_dir, figs, found)
        body, bullets = body + lines, bullets + found_here
    run_id = (env or {}).get("config", {}).get("run_id") or run_dir.name
    head = [
        f"# GSS Bench report: {run_id}",
        "",
        "Every number below is computed from the run's CSVs by `bench/report/`; figures are in "
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
    except (ValueError, OSError) as error:  # a UsageError, a malformed CSV or env.json (ResultsError)
        return fail(error)
    return 0
