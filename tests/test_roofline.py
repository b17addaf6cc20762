"""The roofline: each cell against planted limits (env.json), findings.csv's roofline_frac rows at the longest common
length, REPORT.md's Roofline section with its flags and stage table, and roofline.png, as data and as a file."""

import contextlib
import csv
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from bench import analysis, plots, report
from bench.analysis import findings, load, roofline
from bench.plots import roofline as roofline_plots
from bench.schema import TABLES
from bench.stats import median_order_interval

RATE, BANDWIDTH = 1e11, 1e10  # planted: 100 GFLOP/s in float32, 10 GB/s; the ridge at 10 FLOP/byte
LIMITS = {
    "device": "cpu",
    "threads": 2,
    "matmul_flops_per_s": {"float32": RATE},
    "bandwidth_bytes_per_s": BANDWIDTH,
    "seconds": 12.5,
}
LENGTHS = (1024, 2048, 4096)
REPEATS = 20


def floor_ms(flops, min_bytes):
    return max(flops / RATE, min_bytes / BANDWIDTH) * 1e3


def cell(model, mode, seq_len, *, flops, min_bytes, time_ms, against_ms=None, status="ok"):
    """A scaling.csv row whose floor and fraction follow from the planted limits (roofline_frac against
    `against_ms`, default time_ms: on CUDA the GPU's time); repeats time_ms * (1 + 0.05 z), z evenly spaced over
    [-1, 1] (their median time_ms). min_bytes None: a model that states none (its floor columns empty)."""
    if status != "ok":
        return dict(model=model, mode=mode, seq_len=seq_len, status=status)
    floor = None if min_bytes is None else floor_ms(flops, min_bytes)
    times = time_ms * (1 + 0.05 * np.linspace(-1, 1, REPEATS))
    return dict(
        model=model,
        mode=mode,
        seq_len=seq_len,
        status="ok",
        flops=f"{flops:.6g}",
        min_bytes="" if min_bytes is None else f"{min_bytes:.6g}",
        floor_ms="" if floor is None else f"{floor:.6g}",
        roofline_frac="" if floor is None else f"{floor / (against_ms or time_ms):.6g}",
        time_ms=f"{time_ms:.6g}",
        times_ms=" ".join(f"{t:.6g}" for t in times),
        repeats=REPEATS,
    )


def gss(mode, L, k=1.0):  # memory-bound: 2.5 FLOP/byte, 1e10 FLOP/s whatever the length
    return cell("gss", mode, L, flops=1e6 * L * k, min_bytes=4e5 * L * k, time_ms=100 * L / 1024 * k)


def attention(mode, L, k=1.0):  # compute-bound: L FLOP/byte, 5.24288e10 FLOP/s
    return cell("attention", mode, L, flops=1e3 * L * L * k, min_bytes=1e3 * L * k, time_ms=20 * (L / 1024) ** 2 * k)


def planted_cells():
    """fwd: attention fails at 4096 (the longest common length 2048); fwdbwd: both reach 4096. gss-fast states no
    min_bytes: it neither gets a fraction nor shortens the common length."""
    return [
        *(gss("fwd", L) for L in LENGTHS),
        *(attention("fwd", L) for L in LENGTHS[:-1]),
        cell("attention", "fwd", 4096, flops=0, min_bytes=0, time_ms=0, status="oom"),
        cell("gss-fast", "fwd", 1024, flops=1e9, min_bytes=None, time_ms=50),
        *(gss("fwdbwd", L, 3.0) for L in LENGTHS),
        *(attention("fwdbwd", L, 2.0) for L in LENGTHS),
    ]


def plant(run, cells, *, limits=LIMITS, ops=()):
    """scaling.csv of `cells` (float32, cpu, batch 1, dim 64), env.json holding `limits` (None: no env.json), and
    op_breakdown.csv of `ops` when given."""
    run.mkdir(parents=True, exist_ok=True)
    common = dict(run_id=run.name, dtype="float32", device="cpu", batch=1, dim=64, compiled="false", peak_mem_mb=1)
    write_csv(run / "scaling.csv", TABLES["scaling.csv"].columns, [{**common, **c} for c in cells])
    if limits is not None:
        (run / "env.json").write_text(json.dumps({"config": {"run_id": run.name}, "limits": limits}))
    if ops:
        write_csv(run / "op_breakdown.csv", TABLES["op_breakdown.csv"].columns, [{**common, **o} for o in ops])
    return run


def write_csv(path, columns, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def fractions(found):
    return found[found.finding == "roofline_frac"].set_index(["mode", "model"])


def test_a_fraction_per_model_and_mode_at_the_longest_common_length(tmp_path):
    found = fractions(findings.of_run(plant(tmp_path, planted_cells())))
    assert sorted(found.index) == [("fwd", "attention"), ("fwd", "gss"), ("fwdbwd", "attention"), ("fwdbwd", "gss")]
    assert (found.dtype == "float32").all() and (found.unit == "fraction").all() and (found.other == "").all()
    assert found.ci_low.isna().all() and found.ci_high.isna().all()  # one cell against limits measured once
    # attention fwd at 2048: 4.194304e9 FLOPs at 1e11 FLOP/s = 41.94304 ms against 80 ms
    att = found.loc[("fwd", "attention")]
    assert att.value == pytest.approx(41.94304 / 80, rel=1e-5)
    assert att.detail.startswith("at seq_len 2048; compute-bound: floor 41.94 ms vs time 80 ms (memory 0.205 ms); ")
    # gss fwd at 2048 (not its own longest, 4096): 8.192e8 bytes at 1e10 B/s = 81.92 ms against 200 ms
    assert found.loc[("fwd", "gss")].value == pytest.approx(0.4096, rel=1e-5)
    assert (
        "at seq_len 2048; memory-bound: floor 81.92 ms vs time 200 ms (compute 20.5 ms)"
        in found.loc[("fwd", "gss")].detail
    )
    # fwdbwd: both reach 4096
    assert found.loc[("fwdbwd", "gss")].span == found.loc[("fwdbwd", "attention")].span == "at seq_len 4096"
    assert found.loc[("fwdbwd", "attention")].value == pytest.approx(2e3 * 4096**2 / RATE * 1e3 / (2 * 20 * 16))


def test_the_detail_gives_the_fraction_over_the_repeats_median_interval_but_no_interval(tmp_path):
    att = fractions(findings.of_run(plant(tmp_path, planted_cells()))).loc[("fwd", "attention")]
    times = [float(f"{t:.6g}") for t in 80 * (1 + 0.05 * np.linspace(-1, 1, REPEATS))]
    low_ms, high_ms = median_order_interval(times)
    floor = 41.94304
    assert (
        f"no interval: one cell against limits measured once (its 20 repeats alone: {floor / high_ms:.3f}.."
        f"{floor / low_ms:.3f}, its median's order-statistic interval; the limits' noise not in it)"
    ) in att.detail


def test_a_fraction_taken_against_another_time_quotes_that_time_and_no_repeat_range(tmp_path):
    # on CUDA the suite takes the fraction against the graph-replayed GPU time, not time_ms
    cells = [cell("gss", "fwd", 1024, flops=1e6 * 1024, min_bytes=4e5 * 1024, time_ms=100, against_ms=50)]
    (r,) = roofline.compute(analysis.load_scaling(plant(tmp_path, cells)), LIMITS)
    assert r["value"] == pytest.approx(40.96 / 50, rel=1e-5)
    assert r["detail"] == (
        "at seq_len 1024; memory-bound: floor 40.96 ms vs time 50 ms (compute 10.2 ms); "
        "no interval: one cell against limits measured once"
    )


def test_without_limits_the_binding_roof_is_unknown_but_the_recorded_fraction_stands(tmp_path):
    found = fractions(findings.of_run(plant(tmp_path, planted_cells(), limits=None)))
    assert found.loc[("fwd", "gss")].value == pytest.approx(0.4096, rel=1e-5)
    assert (
        "floor 81.92 ms vs time 200 ms (binding roof unknown: no limits in env.json)"
        in found.loc[("fwd", "gss")].detail
    )


def test_tied_sweeps_each_get_their_row_with_options(tmp_path):
    cells = [{**gss("fwd", L, k), "kernel_N": n} for n, k in (("64", 1.0), ("512", 2.0)) for L in LENGTHS] + [
        attention("fwd", L) for L in LENGTHS[:2]
    ]
    found = fractions(findings.of_run(plant(tmp_path, cells)))
    gss_rows = found.loc[("fwd", "gss")]
    assert sorted(gss_rows.options) == ["kernel_N=512", "kernel_N=64"]
    assert all(d.startswith(f"{o}; at seq_len 2048;") for o, d in zip(gss_rows.options, gss_rows.detail, strict=True))


def test_pooled_runs_give_each_fraction_its_median_and_range(tmp_path):
    runs = [plant(tmp_path / f"r{k}", [gss("fwd", L, k) for L in LENGTHS]) for k in (1.0, 2.0, 4.0)]
    pooled = findings.pool({run: findings.of_run(run) for run in runs})
    (r,) = pooled[pooled.finding == "roofline_frac"].itertuples()
    assert (r.median, r.low, r.high, r.runs) == pytest.approx((0.4096, 0.4096, 0.4096, 3), rel=1e-5)
    assert findings.display(findings.of_run(runs[0]))[-1][5] == "0.410"  # value shown to 3 decimals


def ops_rows():
    """gss fwd 2048: the projections near the compute roof, the FFT convolution far from the memory roof."""
    where = dict(model="gss", mode="fwd", seq_len=2048, status="ok")
    stages = [
        ("projection", 60, dict(peak_frac=0.97, bandwidth_frac=0.1)),
        ("fft_conv", 20, dict(peak_frac=0.001, bandwidth_frac=0.03)),
        ("norm", 10, dict(bandwidth_frac=0.2)),
        ("other", 10, {}),
    ]
    return [{**where, "category": c, "time_ms": t, "fraction": t / 100, **f} for c, t, f in stages]


def test_each_stage_against_its_binding_roof_and_the_farthest_named():
    ops = load.with_numbers(pd.DataFrame(ops_rows()).assign(dtype="float32"))
    stages = roofline.stage_fractions(ops).set_index("category")
    assert list(stages.index) == ["projection", "fft_conv", "norm"]  # other: no fraction stated
    assert list(stages.binding) == ["compute", "memory", "memory"]
    assert list(stages.fraction) == pytest.approx([0.97, 0.03, 0.2])
    assert stages.share["fft_conv"] == pytest.approx(0.2)


@pytest.fixture
def section(tmp_path):
    """The Roofline section of a planted run's REPORT.md (its lines, up to the next section)."""

    def make(cells=None, *, limits=LIMITS, ops=()):
        run = plant(tmp_path / "run", planted_cells() if cells is None else cells, limits=limits, ops=ops)
        text = report.write_report(run, plots_dir=tmp_path / "none").read_text()
        found = re.search(r"^## Roofline\n(.*?)(?=^## )", text, re.M | re.S)
        return text, found and found.group(1)

    return make


def test_the_report_gives_the_limits_the_fractions_and_the_stages(section):
    text, part = section(ops=ops_rows())
    assert (
        "The machine's limits, measured in this run (`python -m bench.limits` in 12.5 s, 2 threads): matrix "
        "product float32 100 GFLOP/s; copy bandwidth 10 GB/s." in part
    )
    low_ms, high_ms = median_order_interval([float(f"{t:.6g}") for t in 80 * (1 + 0.05 * np.linspace(-1, 1, 20))])
    over = f"{41.94304 / high_ms:.3f}..{41.94304 / low_ms:.3f}"
    assert f"| attention | fwd | float32 | 2,048 | 0.524 | {over} | compute | 41.94 | 80 |" in part
    assert "| gss | fwdbwd | float32 | 4,096 | 0.410 | " in part and " | memory | 491.5 | 1200 |" in part
    assert "| gss | fwd | float32 | 2,048 | 0.970 c | 0.030 m | 0.200 m | fft_conv (0.030, 20% of the step) |" in part
    assert "- fwd float32, seq_len 2,048: roofline fraction gss 0.41, attention 0.52" in text
    assert "Above its roof" not in text


def test_limits_from_a_file_say_so(section):
    _, part = section(limits={**LIMITS, "source": "ci/limits.json", "launch_s": 4.2e-6})
    assert "The machine's limits, read from `ci/limits.json` (`--limits`): " in part
    assert "copy bandwidth 10 GB/s; kernel launch floor 4.2 µs." in part


def test_a_cell_above_its_roof_is_flagged_wherever_it_is(section):
    fast = cell("gss", "fwd", 1024, flops=1e6 * 1024, min_bytes=4e5 * 1024, time_ms=40.96 / 1.2)  # a shorter length
    text, part = section([fast, *planted_cells()[1:]])
    assert (
        "- **Above its roof:** gss fwd float32 seq_len 1,024: roofline_frac 1.200 > 1.05: a limit or a count is wrong."
        in part
    )
    assert "- 1 cell above 1.05 of the roofline: a limit or a count is wrong" in text


def test_a_run_without_limits_or_min_bytes_has_no_section_no_rows_and_no_figure(tmp_path, section, capsys):
    old = [{**c, "min_bytes": "", "floor_ms": "", "roofline_frac": ""} for c in planted_cells()]
    text, part = section(old, limits=None)
    assert part is None and "oofline" not in text
    run = tmp_path / "run"
    assert findings.of_run(run).finding.isin(["roofline_frac"]).sum() == 0
    assert "roofline.png" not in [p.name for p in plots.render_all(run, tmp_path / "figs")]
    assert "note: skipped roofline: no limits in env.json" in capsys.readouterr().err
    plant(run, old)  # limits, but no cell states its min_bytes
    assert plots.plot_roofline(run, tmp_path / "r.png") is None and not (tmp_path / "r.png").exists()
    assert "note: skipped roofline: no ok cell of scaling.csv states its min_bytes" in capsys.readouterr().err


def test_frames_without_the_columns_give_nothing():
    frame = pd.DataFrame(dict(model=["gss"], mode=["fwd"], dtype=["float32"], seq_len=[1024], status=["ok"]))
    assert roofline.points(frame).empty and roofline.at_common_length(frame, LIMITS) == []
    assert roofline.above_roof(frame).empty and roofline.stage_fractions(frame).empty
    assert roofline.stage_fractions(None).empty and roofline.points(None).empty


@pytest.mark.parametrize(
    "limits",
    [None, {}, {"matmul_flops_per_s": {"float32": 1e11}}, {**LIMITS, "bandwidth_bytes_per_s": 0}, "x"],
)
def test_limits_that_are_absent_or_malformed_are_none(tmp_path, limits):
    (tmp_path / "env.json").write_text(json.dumps({"limits": limits}))
    assert roofline.limits_of(tmp_path) is None


def test_the_figure_draws_the_roof_the_slope_and_each_cell(tmp_path):
    drawn = roofline_plots.roofline_series(analysis.load_scaling(plant(tmp_path, planted_cells())), LIMITS)
    assert drawn["roofs"] == {"float32": RATE} and drawn["bandwidth"] == BANDWIDTH
    # x from a quarter of the ridge (10 FLOP/byte; gss's 2.5 equals it) / 1.5 to the highest intensity (attention's
    # L, at 4096) x 1.5; y from the lowest point (gss's 1.024e10 FLOP/s) / 1.5 to the roof x 1.5
    assert drawn["x"] == pytest.approx((2.5 / 1.5, 1.5 * 4096), rel=1e-5)
    assert drawn["y"] == pytest.approx((1.024e10 / 1.5, 1.5 * RATE), rel=1e-5)
    (x0, x1), (y0, y1) = drawn["slope"]
    assert (x0, x1, y0, y1) == pytest.approx((2.5 / 1.5, 10, 2.5 / 1.5 * BANDWIDTH, RATE))  # up to the ridge
    series = {(s["label"], s["mode"]): s for s in drawn["series"]}
    assert sorted(series) == [("attention", "fwd"), ("attention", "fwdbwd"), ("gss", "fwd"), ("gss", "fwdbwd")]
    att = series[("attention", "fwd")]
    assert att["seq_len"] == [1024, 2048] and att["sweep"]
    assert att["intensity"] == pytest.approx([1024, 2048], rel=1e-5)  # the counts as written: 6 digits
    assert att["flops_per_s"] == pytest.approx([1e3 * 1024**2 / 0.02] * 2, rel=1e-5)
    assert series[("gss", "fwd")]["intensity"] == pytest.approx([2.5] * 3)


def test_the_figure_is_written_with_its_lines_labelled(tmp_path, monkeypatch):
    run = plant(tmp_path / "run", planted_cells())
    figures = []
    monkeypatch.setattr(roofline_plots, "_save", lambda fig, path: figures.append(fig) or path)
    plots.plot_roofline(run, tmp_path / "r.png")
    lines = {line.get_label(): line for line in figures[0].axes[0].get_lines()}
    assert list(lines["float32 roof 100 GFLOP/s"].get_ydata()) == [100, 100]  # in GFLOP/s
    assert list(lines["bandwidth 10 GB/s × intensity"].get_ydata()) == pytest.approx([2.5 / 1.5 * 10, 100])
    assert list(lines["gss fwd"].get_ydata()) == pytest.approx([10.24] * 3, rel=1e-5)
    assert lines["gss fwd"].get_marker() == "o" and lines["gss fwdbwd"].get_marker() == "s"
    assert lines["gss fwd"].get_color() == plots.colour("gss")
    monkeypatch.undo()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert plots.main([str(run), "--out", str(tmp_path / "figs")]) == 0
    assert str(tmp_path / "figs" / "roofline.png") in out.getvalue().splitlines()
    assert (tmp_path / "figs" / "roofline.png").read_bytes().startswith(b"\x89PNG")
    assert "![roofline](roofline.png)" in (tmp_path / "figs" / "REPORT.md").read_text()
