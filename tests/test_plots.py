"""Figures from fixture CSVs: every plot writes a real PNG, absent or failed data never crash, no torch."""

import contextlib
import csv
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import analysis, plots, report
from bench.plots import training
from bench.results import REPO_ROOT
from bench.schema import MODELS_ORDER

FIXTURE = Path(__file__).parent / "fixtures" / "run"
SCALING_FIGURES = [
    "time_fwd_float32.png",
    "time_fwdbwd_float32.png",
    "memory_fwd.png",
    "memory_fwdbwd.png",
    "flops_fwd.png",
    "flops_fwdbwd.png",
    "ablation_kernel_N.png",
    "ablation_conv_kernel.png",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_png(path):
    data = Path(path).read_bytes()
    return data.startswith(PNG_SIGNATURE) and len(data) > 1024


def files(directory):
    """Every file under a directory, by relative path, with its bytes."""
    return {p.relative_to(directory): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def links(report_md):
    return re.findall(r"!\[[^]]*\]\(([^)]+)\)", Path(report_md).read_text())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A copy of the fixture run rendered once through the CLI's main with --out elsewhere:
    (run_dir, out_dir, stdout, the run dir's files before)."""
    root = tmp_path_factory.mktemp("rendered")
    run_dir, out_dir = root / "results" / "fixture", root / "elsewhere" / "figures"
    shutil.copytree(FIXTURE, run_dir)
    before = files(run_dir)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert plots.main([str(run_dir), "--out", str(out_dir)]) == 0
    return run_dir, out_dir, out.getvalue(), before


@pytest.mark.parametrize("name", SCALING_FIGURES + list(plots.FIGURES))
def test_every_figure_is_a_png(rendered, name):
    _, out_dir, stdout, _ = rendered
    assert is_png(out_dir / name)
    assert str(out_dir / name) in stdout.splitlines()


def test_main_prints_the_figures_then_the_report_beside_them(rendered):
    _, out_dir, stdout, _ = rendered
    lines = stdout.splitlines()
    assert lines[-1] == str(out_dir / "REPORT.md")
    assert sorted(Path(p).name for p in lines[:-1]) == sorted(p.name for p in out_dir.glob("*.png"))


def test_out_leaves_the_run_dir_untouched_and_links_resolve_from_out(rendered):
    run_dir, out_dir, _, before = rendered
    assert files(run_dir) == before  # no REPORT.md written or rewritten there, every CSV byte-identical
    found = links(out_dir / "REPORT.md")
    assert sorted(found) == sorted(p.name for p in out_dir.glob("*.png"))  # relative to DIR: beside it
    assert all((out_dir / link).is_file() for link in found)


def test_without_out_the_report_goes_to_the_run_dir_and_links_to_plots(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path / "results")
    run_dir = tmp_path / "results" / "abc"
    run_dir.mkdir(parents=True)
    shutil.copy(FIXTURE / "decode.csv", run_dir)  # one figure is enough here
    assert plots.main([str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(tmp_path / "plots" / "abc" / "decode.png"),
        str(run_dir / "REPORT.md"),
    ]
    assert links(run_dir / "REPORT.md") == ["../../plots/abc/decode.png"]
    assert (run_dir / "../../plots/abc/decode.png").resolve().is_file()


def test_plot_functions_take_a_frame_or_a_run_dir(tmp_path):
    df = analysis.load_scaling(FIXTURE)
    assert is_png(plots.plot_time(df, tmp_path / "a.png", mode="fwdbwd", dtype="float32"))
    assert is_png(plots.plot_memory(FIXTURE, tmp_path / "b.png", mode="fwd"))
    assert is_png(plots.plot_recall(analysis.load_csv(FIXTURE, "recall.csv"), tmp_path / "c.png"))


@pytest.mark.parametrize("plot", list(plots.FIGURES.values()) + [plots.plot_kernel_n, plots.plot_conv_kernel])
def test_a_missing_csv_is_skipped_with_a_note(tmp_path, capsys, plot):
    assert plot(tmp_path, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: skipped") and "absent" in err[0]


def test_an_empty_run_dir_renders_nothing(tmp_path, capsys):
    assert plots.render_all(tmp_path, tmp_path / "plots") == []
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize(
    "name,column",
    [
        ("scaling.csv", "peak_mem_mb"),
        ("perplexity.csv", "kernel_N"),
        ("decode.csv", "dtype"),
        ("numerics.csv", "grad_rel_err"),
    ],
)
def test_a_csv_without_a_column_the_figures_read_exits_2_with_one_line(tmp_path, capsys, name, column):
    run = tmp_path / "run"  # that CSV alone: the error comes before any figure is drawn
    run.mkdir()
    with open(FIXTURE / name, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(run / name, "w", newline="") as f:
        writer = csv.DictWriter(f, [c for c in rows[0] if c != column], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    for main, flags in ((plots.main, ["--out", str(tmp_path / "figs")]), (report.main, [])):
        assert main([str(run), *flags]) == 2  # an exception other than the user's would fail the test here
        assert (
            capsys.readouterr().err.strip().splitlines()[-1]
            == f"error: {run / name}: malformed, missing columns {column}"
        )


def test_failed_cells_are_gaps_and_all_failed_is_skipped(tmp_path, capsys):
    df = analysis.load_scaling(FIXTURE)
    only_attention = df[(df.model == "attention") & (df["mode"] == "fwd")]
    assert is_png(plots.plot_time(only_attention, tmp_path / "t.png", mode="fwd"))
    failed = df[df.status != "ok"]
    assert plots.plot_time(failed, tmp_path / "f.png", mode="fwd") is None
    assert plots.plot_memory(failed, tmp_path / "m.png", mode="fwd") is None
    assert "has no ok rows" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURE.glob("*.csv")))
def test_one_ok_row_and_the_failed_ones_never_crash(tmp_path, capsys, name):
    lines = (FIXTURE / name).read_text().splitlines()
    keep = [lines[1]] + [line for line in lines[2:] if re.search(r",(oom|error|skipped),", line)]
    (tmp_path / name).write_text("\n".join([lines[0], *keep]) + "\n")
    for path in plots.render_all(tmp_path, tmp_path / "plots"):
        assert is_png(path)
    assert "## Failed cells" in report.write_report(tmp_path, plots_dir=tmp_path / "plots").read_text()


@pytest.fixture
def drawn(monkeypatch):
    """The figures the training plots save, kept instead of written: a list of matplotlib Figures."""
    figures = []
    monkeypatch.setattr(training, "_save", lambda fig, out_path: figures.append(fig) or out_path)
    return figures


def lines_by_label(fig):
    """label -> Line2D of every plotted line, an error-bar series by its data line."""
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    return lines | {c.get_label(): c.lines[0] for ax in fig.axes for c in ax.containers if hasattr(c, "has_xerr")}


def test_recall_draws_the_floor_and_the_key_blind_ceiling_at_each_length(drawn):
    plots.plot_recall(FIXTURE, "recall.png")
    lines = lines_by_label(drawn[0])
    # recall.csv's floor_accuracy (1 / 256 value tokens of vocab 512) and ceiling_accuracy at (64, 4) and (256, 16)
    ceiling, floor = lines["key-blind ceiling (the best pair-rank rule)"], lines["floor (a random value token)"]
    assert list(ceiling.get_xdata()) == [64, 256] and list(ceiling.get_ydata()) == [0.291397, 0.0833931]
    assert list(floor.get_xdata()) == [64, 256] and list(floor.get_ydata()) == [1 / 256, 1 / 256]
    assert not any(label.startswith("chance") for label in lines)  # 1 / num_kv_pairs is neither
    gss = lines["gss"]  # the selected rate's mean over seeds, not the other rates'
    assert list(gss.get_ydata()) == pytest.approx([0.88, 0.68])


def test_the_window_floor_is_drawn_where_the_entropy_floor_is(drawn):
    plots.plot_bpb(FIXTURE, "bpb.png")
    plots.plot_length_generalisation(FIXTURE, "gen.png")
    bpb, gen = (lines_by_label(fig) for fig in drawn)
    assert list(bpb["window floor 1.700 (the optimum knowing the phase)"].get_ydata()) == [1.7, 1.7]
    assert list(bpb["entropy floor 1.500 (infinite context)"].get_ydata()) == [1.5, 1.5]
    window = gen["window floor (the optimum knowing the phase)"]
    assert list(window.get_xdata()) == [1, 2, 4] and list(window.get_ydata()) == [1.7, 1.5, 1.5]


def test_the_learning_rate_figure_rings_each_selected_rate(drawn, capsys):
    plots.plot_lr_selection(FIXTURE, "lr.png")
    stdlib = drawn[0].axes[0]
    assert stdlib.get_xscale() == "log"
    (ring,) = stdlib.collections[-1:]
    # attention selected 0.002, gss 0.006, conv 0.012
    assert sorted(ring.get_offsets().tolist()) == [
        pytest.approx(p) for p in ([0.002, 2.35], [0.006, 2.45], [0.012, 2.52])
    ]
    assert list(lines_by_label(drawn[0])["conv"].get_ydata()) == pytest.approx([2.70, 2.60, 2.52])
    test_only = analysis.load_csv(FIXTURE, "perplexity.csv")
    assert plots.plot_lr_selection(test_only[test_only.split == "test"], "lr.png") is None
    assert capsys.readouterr().err.strip() == (
        "note: skipped learning-rate selection: perplexity.csv has no validation rows (one rate per model)"
    )


def test_every_known_model_has_its_own_colour_and_other_models_one_apart():
    known = [plots.colour(m) for m in MODELS_ORDER]
    assert len(set(known)) == len(known) and not set(known) & set(plots.FALLBACK_COLOURS)
    others = {plots.colour(name) for name in ("mamba", "hyena", "rwkv", "s4", "retnet")}
    assert others <= set(plots.FALLBACK_COLOURS) and not others & set(known)


def test_plots_imports_neither_torch_nor_models():
    code = (
        "import bench.plots, bench.report, sys; "
        "assert 'torch' not in sys.modules and 'models' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_only_plots_imports_matplotlib():
    importers = [
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "bench").rglob("*.py")
        if re.search(r"^\s*(import|from)\s+matplotlib", p.read_text(), re.M)
    ]
    assert importers == ["bench/plots/style.py"]  # the plots package's one door to matplotlib


def test_cli_on_a_missing_run_dir_exits_2_with_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bench.plots", str(tmp_path / "nope")], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: ") and "nope" in r.stderr
