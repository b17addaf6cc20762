"""Zoology's figure 2 from planted recall.csv rows: the points at the selected rates, the widths that solve each
panel, the findings.csv rows, REPORT.md's section and the figure (no torch)."""

import csv
import math

import pytest

from bench import analysis
from bench.analysis import zoology
from bench.plots import zoology as zoology_plot
from bench.report.zoology import zoology_section
from bench.schema import TABLES

RATES = (1e-3, 3e-3, 1e-2)
WIDTHS = (64, 128, 256)
# (seq_len, num_kv_pairs) -> model -> the test accuracy at the selected rate, per width
PLANTED = {
    (64, 4): {
        "attention": (0.31, 0.97, 1.0),
        "gss": (0.2, 0.5, 0.93),
        "conv": (0.1, 0.2, 0.3),
    },
    (64, 8): {
        "attention": (0.2, 0.9, 0.95),
        "gss": (0.1, 0.3, 0.6),
        "conv": (0.05, 0.1, 0.2),
    },
}
EDGE = ("gss", 64, 8, 128)  # (model, seq_len, pairs, width) whose selection chose the largest rate tried
OPTIONS = {"gss": dict(kernel_N=64, lambda_imag_exp="true"), "conv": dict(conv_kernel=64)}


def row(model, seq_len, pairs, dim, lr, accuracy, *, val, selected, seed=0, steps=500, **extra):
    options = OPTIONS.get(model, {}) | ({"kernel_H": dim // 2} if model == "gss" else {})  # H follows the width
    return dict(
        run_id="planted",
        model=model,
        seq_len=seq_len,
        num_kv_pairs=pairs,
        vocab=8192,
        seed=seed,
        steps=steps,
        dim=dim,
        depth=2,
        batch=64,
        dtype="float32",
        lr=lr,
        accuracy=accuracy,
        val_accuracy=val,
        lr_selected="true" if selected else "false",
        status="ok",
        chance_accuracy=1 / pairs,
        **(options | extra),
    )


def selection(model, seq_len, pairs, dim, accuracy, **extra):
    """The selection seed's rows at every rate: the middle rate has the best validation accuracy (the largest at
    EDGE), while another rate's test accuracy is higher, which the point must not take."""
    chosen = 2 if (model, seq_len, pairs, dim) == EDGE else 1
    return [
        row(
            model,
            seq_len,
            pairs,
            dim,
            lr,
            accuracy if i == chosen else min(accuracy + 0.04, 1.0) if i == 0 else accuracy / 2,
            val=0.5 if i == chosen else 0.4,
            selected=i == chosen,
            **extra,
        )
        for i, lr in enumerate(RATES)
    ]


def planted_rows():
    # first in the CSV, a shorter run's cells at one width of the (64, 4) panel: another setting, joining no line
    rows = selection("attention", 64, 4, 64, 0.5, steps=100) + selection("attention-chunked", 64, 4, 64, 0.5, steps=100)
    for (seq_len, pairs), by_model in PLANTED.items():
        # the bounds recorded for 4 pairs only (an older run's rows leave them empty)
        bounds = dict(floor_accuracy=1 / 4096, ceiling_accuracy=0.3) if pairs == 4 else {}
        for model, accuracies in by_model.items():
            for dim, accuracy in zip(WIDTHS, accuracies, strict=True):
                rows += selection(model, seq_len, pairs, dim, accuracy, **bounds)
    rows += selection("attention", 32, 4, 64, 0.95, steps=250)  # the quick preset's single recall cell: no panel
    rows.append(row("attention", 64, 4, 512, 1e-2, float("nan"), val="", selected=False) | dict(status="oom"))
    return rows


def write_recall(run_dir, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "recall.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, TABLES["recall.csv"].columns, restval="")
        writer.writeheader()
        writer.writerows({k: "" if v != v else v for k, v in r.items()} for r in rows)  # NaN as empty
    return run_dir


@pytest.fixture
def run_dir(tmp_path):
    return write_recall(tmp_path / "run", planted_rows())


@pytest.fixture
def points(run_dir):
    return zoology.points(analysis.load_csv(run_dir, "recall.csv"))


def test_a_point_is_the_test_accuracy_at_the_rate_validation_selected(points):
    assert len(points) == 2 * 3 * 3  # panels x models x widths: the quick cell, the shorter run, the oom left out
    at = points.set_index(["seq_len", "num_kv_pairs", "model", "dim"]).sort_index()
    for (seq_len, pairs), by_model in PLANTED.items():
        for model, accuracies in by_model.items():
            assert list(at.loc[(seq_len, pairs, model)].accuracy) == pytest.approx(accuracies)
    attention = at.loc[(64, 4, "attention", 128)]
    assert (attention.lr, attention.val_accuracy, attention.seeds) == (3e-3, 0.5, 1)
    assert attention.rates == RATES and attention.bracketed
    edge = at.loc[(64, 8, "gss", 128)]
    assert edge.lr == 1e-2 and not edge.bracketed
    assert at.bracketed.sum() == len(at) - 1


def test_in_panels_marks_the_ok_rows_of_the_panels_only(run_dir):
    recall = analysis.load_csv(run_dir, "recall.csv")
    inside = zoology.in_panels(recall)
    assert inside.sum() == 2 * 3 * 3 * len(RATES)
    outside = recall[~inside]  # the shorter run, the quick cell, the oom
    assert sorted(set(zip(outside.steps, outside.status, strict=True))) == [(100, "ok"), (250, "ok"), (500, "oom")]


def test_points_carry_the_panel_bounds_where_recorded_and_keep_one_line_per_model(points):
    four, eight = (points[points.num_kv_pairs == k] for k in (4, 8))
    assert set(four.floor) == {1 / 4096} and set(four.ceiling) == {0.3}
    assert eight.floor.isna().all() and eight.ceiling.isna().all()
    assert list(dict.fromkeys(points.label)) == ["gss", "conv", "attention"]  # kernel_H at dim / 2 splits no line


def test_several_seeds_average_and_option_sets_at_one_width_are_lines_of_their_own(tmp_path):
    rows = []
    for dim in (64, 128):
        rows += selection("attention", 64, 4, dim, 0.8)
        rows.append(row("attention", 64, 4, dim, 3e-3, 0.9, val=0.45, selected=True, seed=1))
        for n in (64, 512):
            rows += selection("gss", 64, 4, dim, 0.2 if n == 64 else 0.4, kernel_N=n)
    pts = zoology.points(analysis.load_csv(write_recall(tmp_path, rows), "recall.csv"))
    attention = pts[pts.model == "attention"]
    assert list(attention.accuracy) == pytest.approx([0.85, 0.85]) and set(attention.seeds) == {2}
    assert list(attention.val_accuracy) == [0.5, 0.5]  # the selection seed's
    gss = pts[pts.model == "gss"].groupby("label").accuracy.first()
    assert gss.to_dict() == pytest.approx({"gss kernel_N=64": 0.2, "gss kernel_N=512": 0.4})


def test_a_setting_that_changes_with_the_width_still_makes_one_panel(tmp_path):
    rows = [r for dim in WIDTHS for r in selection("attention", 64, 4, dim, dim / 256, steps=2 * dim)]
    pts = zoology.points(analysis.load_csv(write_recall(tmp_path, rows), "recall.csv"))
    assert list(pts.dim) == list(WIDTHS) and list(pts.accuracy) == [0.25, 0.5, 1.0]


def test_solved_widths_per_panel_and_model(points):
    solved = zoology.solved(points).set_index(["seq_len", "num_kv_pairs", "label"])
    assert solved.solved_at.to_dict() == {
        (64, 4, "gss"): (256,),
        (64, 4, "conv"): (),
        (64, 4, "attention"): (128, 256),
        (64, 8, "gss"): (),
        (64, 8, "conv"): (),
        (64, 8, "attention"): (128, 256),  # 0.9 itself solves: the bar is inclusive
    }
    assert solved.smallest[64, 4, "attention"] == 128 and math.isnan(solved.smallest[64, 4, "conv"])


def test_findings_rows_give_the_smallest_solving_width_and_keep_the_unsolved(run_dir):
    found = zoology.compute(run_dir)
    assert list(found.columns) == [*TABLES["findings.csv"].columns, "options", "span"]
    assert set(found.finding) == {"recall_solved_width"} and set(found["mode"]) == {"recall"}
    assert set(found.unit) == {"width"} and set(found.dtype) == {"float32"} and set(found.other) == {""}
    assert found.ci_low.isna().all() and found.ci_high.isna().all()
    by = found.set_index(["model", "options"])
    attention = by.loc["attention", "seq_len 64, 4 pairs"]
    assert attention.value == 128
    assert attention.detail == "seq_len 64, 4 pairs; accuracy 0.31/0.97/1.00 at width 64/128/256"
    conv = by.loc["conv", "seq_len 64, 8 pairs"]
    assert math.isnan(conv.value)
    assert conv.detail == (
        "seq_len 64, 8 pairs; not solved at any width up to 256: accuracy 0.05/0.10/0.20 at width 64/128/256"
    )
    assert by.value.to_dict() == pytest.approx(
        {
            ("gss", "seq_len 64, 4 pairs"): 256,
            ("conv", "seq_len 64, 4 pairs"): math.nan,
            ("attention", "seq_len 64, 4 pairs"): 128,
            ("gss", "seq_len 64, 8 pairs"): math.nan,
            ("conv", "seq_len 64, 8 pairs"): math.nan,
            ("attention", "seq_len 64, 8 pairs"): 128,
        },
        nan_ok=True,
    )


def quick_only(tmp_path):
    return write_recall(tmp_path / "quick", selection("attention", 32, 4, 64, 0.95) + selection("gss", 32, 4, 64, 0.3))


def test_without_a_grid_of_widths_nothing_is_found(tmp_path):
    for run in (quick_only(tmp_path), tmp_path / "no-recall"):
        assert zoology.compute(run).empty
        assert zoology_section(run, lambda *patterns: [], None) == ([], [])


def test_the_report_section_tables_each_panel_and_says_where_each_model_solves_it(run_dir):
    lines, findings = zoology_section(run_dir, lambda *patterns: [f"![{p}]" for p in patterns], None)
    assert lines[0] == "## Zoology's MQAR: accuracy against model width"
    assert "one seed" in lines[2] and "at least 0.9" in lines[2]
    assert "seq_len 64, 4 pairs (floor 0.000244, key-blind ceiling 0.3):" in lines
    assert "seq_len 64, 8 pairs:" in lines  # no bounds recorded
    assert "| model | width 64 | width 128 | width 256 | solved at width |" in lines
    assert "| attention | 0.310 (lr 0.003) | 0.970 (lr 0.003) | 1.000 (lr 0.003) | 128, 256 |" in lines
    assert "| gss | 0.100 (lr 0.003) | 0.300 (lr 0.01, largest tried) | 0.600 (lr 0.003) | none up to 256 |" in lines
    assert lines[-1] == "![zoology_mqar.png]"
    assert findings == [
        "MQAR at seq_len 64, 4 pairs: solved (accuracy ≥ 0.9) by gss at width 256; conv at no width up to 256; "
        "attention at width 128, 256",
        "MQAR at seq_len 64, 8 pairs: solved (accuracy ≥ 0.9) by gss at no width up to 256; conv at no width up to "
        "256; attention at width 128, 256",
    ]


@pytest.fixture
def drawn(monkeypatch):
    """The figures plot_zoology saves, kept instead of written."""
    figures = []
    monkeypatch.setattr(zoology_plot, "_save", lambda fig, out_path: figures.append(fig) or out_path)
    return figures


def test_the_figure_draws_accuracy_against_width_per_model_and_panel(run_dir, drawn):
    zoology_plot.plot_zoology(run_dir, "zoology_mqar.png")
    four, eight = drawn[0].axes
    assert [ax.get_title() for ax in (four, eight)] == ["seq_len 64, 4 pairs", "seq_len 64, 8 pairs"]
    lines = {line.get_label(): line for line in four.get_lines()}
    assert list(lines["attention"].get_xdata()) == list(WIDTHS)
    assert list(lines["attention"].get_ydata()) == pytest.approx([0.31, 0.97, 1.0])
    assert four.get_xscale() == "log" and four.get_ylim() == (0, 1.02)
    assert [t.get_text() for t in four.get_xticklabels()] == ["64", "128", "256"]
    floor = lines["floor: a random value token (floor_accuracy)"]
    assert list(floor.get_ydata()) == [1 / 4096] * 2 and floor.get_linestyle() == "--"
    assert lines["ceiling of key-blind rules (ceiling_accuracy)"].get_ydata()[0] == 0.3
    assert not any("floor" in line.get_label() for line in eight.get_lines())  # not recorded: not drawn
    legend = [t.get_text() for t in drawn[0].legends[0].get_texts()]
    assert legend[:3] == ["gss", "conv", "attention"] and len(legend) == len(set(legend))


def test_the_figure_is_a_png_or_skipped_with_a_note(run_dir, tmp_path, capsys):
    path = zoology_plot.plot_zoology(run_dir, tmp_path / "figs" / "zoology_mqar.png")
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1024
    assert zoology_plot.plot_zoology(quick_only(tmp_path), tmp_path / "none.png") is None
    assert zoology_plot.plot_zoology(tmp_path / "empty", tmp_path / "absent.png") is None
    assert not (tmp_path / "none.png").exists() and not (tmp_path / "absent.png").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("note: skipped Zoology MQAR figure") for e in err)
    assert "no grid of widths" in err[0] and "absent" in err[1]
