"""findings.csv and REPORT.md on graph-replayed CUDA times (gpu_ms): planted CUDA runs whose eager times are 3x
gss's replayed ones (launch-bound), so the two clocks give other answers."""

import numpy as np
import pytest

from bench import analysis, report
from bench.analysis import findings
from bench.analysis.series import NO_GAUGE
from tests.test_findings import LENGTHS, one, plant

CUDA = "cuda:NVIDIA H100 80GB HBM3"
REPLAYED = {"gss": lambda L: 0.002 * L, "attention": lambda L: L * L / 1e6}  # equal at L = 2000
EAGER = {("gss", "fwd"): {L: 0.006 * L for L in LENGTHS}, ("attention", "fwd"): {L: L * L / 1e6 for L in LENGTHS}}
NOTE = "capture: RuntimeError: operation not permitted when stream is capturing"


def replays(ms, n=10, spread=0.02):
    """n replays' times evenly spread about ms (their median)."""
    return " ".join(f"{v:.6g}" for v in ms * (1 + spread * np.linspace(-1, 1, n)))


def plant_cuda(run, *, without=()):
    """EAGER's cells on CUDA, each with REPLAYED's gpu_ms and its replays; the cells (model, seq_len) of `without`
    not captured (NOTE)."""

    def edit(row):
        ms, key = REPLAYED[row["model"]](row["seq_len"]), (row["model"], row["seq_len"])
        graph = dict(gpu_ms=f"{ms:.6g}", gpu_times_ms=replays(ms), gpu_note="")
        return {**row, **(dict(gpu_ms="", gpu_times_ms="", gpu_note=NOTE) if key in without else graph)}

    return plant(run, EAGER, device=CUDA, edit=edit)


def test_the_findings_read_the_replays_where_every_cell_has_them(tmp_path):
    found = findings.of_run(plant_cuda(tmp_path))
    assert found.detail.str.contains(analysis.REPLAYED, regex=False).all()
    gss = one(found, finding="slope", model="gss")
    assert gss.value == pytest.approx(1.0, abs=1e-4) and NO_GAUGE in gss.detail  # the replays have no drift gauge
    assert gss.ci_low < gss.value < gss.ci_high
    assert one(found, finding="slope_diff", model="gss").value == pytest.approx(-1.0, abs=1e-4)
    cross = one(found, finding="crossover", model="gss")
    assert cross.value == pytest.approx(2000, rel=1e-3)  # eager: 6000
    speedup = one(found, finding="speedup", model="gss")
    assert speedup.value == pytest.approx(8192 / 2000, rel=1e-4)  # eager: 8192 / 6000
    assert speedup.ci_low < speedup.value < speedup.ci_high


def test_the_replays_of_two_cells_are_not_paired_rounds(tmp_path):
    """Every cell's replays rise in step (replays()): paired by position, each replay's ratio would be the same and
    the interval of their median none; unpaired, it carries the spread of both cells' replays."""
    found = findings.of_run(plant_cuda(tmp_path))
    for finding in ("speedup", "slope_diff"):
        r = one(found, finding=finding, model="gss")
        assert r.ci_high - r.ci_low > 0.01 * abs(r.value), r
    eager = findings.of_run(plant(tmp_path / "eager", EAGER, device=CUDA))  # the eager rounds are paired: to compare
    assert one(eager, finding="speedup", model="gss").detail == "at seq_len 8192"


def test_one_cell_without_replays_sends_its_group_back_to_the_eager_times(tmp_path):
    found = findings.of_run(plant_cuda(tmp_path, without={("gss", 256)}))
    assert found.detail.str.endswith("clock eager: 1 of 12 cells without gpu_ms").all()
    assert one(found, finding="crossover", model="gss").value == pytest.approx(6000, rel=1e-3)
    speedup = one(found, finding="speedup", model="gss")
    assert speedup.value == pytest.approx(8192 / 6000, rel=1e-4)
    assert NO_GAUGE not in one(found, finding="slope", model="gss").detail  # eager: the gauge's rounds


def test_a_cpu_run_names_no_clock(tmp_path):
    found = findings.of_run(plant(tmp_path, EAGER))
    assert not found.detail.str.contains("clock").any()


def test_the_report_sets_the_replayed_times_beside_the_eager_ones_and_counts_them(tmp_path):
    text = report.write_report(plant_cuda(tmp_path / "run"), plots_dir=tmp_path / "figs").read_text(encoding="utf-8")
    assert "| mode | dtype | seq_len | gss | gss replayed | attention | attention replayed | fastest |" in text
    assert "| fwd | float32 | 8,192 | 49.2 | 16.38 | 67.1 | 67.11 | gss |" in text
    assert "- fwd float32, seq_len 8,192: fastest gss (16.38 ms replayed)" in text
    assert "- 12 of 12 ok CUDA cells graph-replayed (gpu_ms)" in text
    assert (
        "The findings read the graph-replayed gpu_ms (unpaired intervals" in text
        and "no drift gauge) in fwd float32." in text
    )
    assert "gss faster than attention above seq_len ≈ 2,000" in text  # the crossover table, on the replays too
    assert "without gpu_ms, and why" not in text


def test_the_report_lists_the_cells_not_captured_with_their_reason(tmp_path):
    run = plant_cuda(tmp_path / "run", without={("gss", 256), ("attention", 8192)})
    text = report.write_report(run, plots_dir=tmp_path / "figs").read_text(encoding="utf-8")
    assert "- 10 of 12 ok CUDA cells graph-replayed (gpu_ms)" in text
    assert "the eager time_ms (paired rounds: not every cell there has gpu_ms) in fwd float32." in text
    assert f"| gss | fwd | float32 | 256 |  | {NOTE} |" in text
    assert f"| attention | fwd | float32 | 8,192 |  | {NOTE} |" in text
    assert "| fwd | float32 | 8,192 | 49.2 | 16.38 | 67.1 |  | gss |" in text  # fastest on the eager clock
    assert "- fwd float32, seq_len 8,192: fastest gss (49.2 ms)" in text


def test_a_replayed_gss_dss_speedup_is_placed_at_its_length_in_the_figure_and_the_paper_table(tmp_path):
    """A replayed speed-up's detail goes on after "at seq_len N" (its clock): the figure and the paper's table take
    the length from the row's span."""
    from bench.plots.scaling import plot_gss_dss
    from bench.report import paper

    REPLAYED["dss"] = lambda L: 0.003 * L
    EAGER[("dss", "fwd")] = {L: 0.009 * L for L in LENGTHS}
    try:
        run = plant_cuda(tmp_path / "run")
        found = findings.of_run(run)
        rows = findings.speedups(found, "gss", "dss")
        assert rows.detail.str.contains(analysis.REPLAYED, regex=False).all()
        assert rows.value.to_numpy() == pytest.approx(1.5, rel=1e-3)  # 0.003 L / 0.002 L: the replays' ratio
        assert plot_gss_dss(analysis.load_scaling(run), tmp_path / "gss_vs_dss.png", found=found).exists()
        lines, bullets = paper.paper_section(run, lambda *names: [], found)
        assert f"| fwd | float32 | {LENGTHS[-1]} | 1.50x |" in "\n".join(lines)
        assert bullets[0].startswith(f"GSS vs DSS, fwd float32: gss 1.50x faster at seq_len {LENGTHS[-1]} (95% ")
    finally:
        del REPLAYED["dss"], EAGER[("dss", "fwd")]


ABLATION = {("gss", "fwd", 64): {1024: 10.0}, ("gss", "fwd", 256): {1024: 12.0}}  # eager: 1.2x over kernel_N
ABLATION_REPLAYED = {"64": 2.0, "256": 3.0}  # replayed: 1.5x


def ablation_lines(text):
    """The kernel_N table's rows (the sweep's cells at 1024, planted without replays, are listed elsewhere)."""
    return [line for line in text.splitlines() if line.startswith("| gss | fwd | float32 | 1,024 |") and "×" in line]


def test_an_ablation_row_whose_cells_were_all_replayed_reads_the_replays(tmp_path):
    def edit(row):  # CUDA rows only: a CPU run has no gpu_ms
        ms = ABLATION_REPLAYED.get(str(row["kernel_N"])) if row["device"] == CUDA else None
        return {**row, **(dict(gpu_ms=f"{ms:.6g}", gpu_times_ms=replays(ms), gpu_note="") if ms else {})}

    for device, expected in ((CUDA, "|  | 2.00 | 3.00 | 1.50× replayed |"), ("cpu", "|  | 10.0 | 12.0 | 1.20× |")):
        run = plant(tmp_path / device.split(":")[0], {**EAGER, **ABLATION}, device=device, edit=edit)
        text = report.write_report(run, plots_dir=tmp_path / "figs").read_text(encoding="utf-8")
        assert ablation_lines(text) == ["| gss | fwd | float32 | 1,024 " + expected], ablation_lines(text)
        assert ("A row marked replayed" in text) == (device == CUDA)
