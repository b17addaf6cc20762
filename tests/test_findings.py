"""findings.csv: slopes, crossovers and speed-ups with bootstrap intervals, on planted runs whose answers are known."""

import csv
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import analysis, plots, report
from bench.analysis import findings
from bench.plots import scaling as scaling_plots
from bench.schema import TABLES

COLUMNS = TABLES["scaling.csv"].columns
LENGTHS = [256, 512, 1024, 2048, 4096, 8192]
BASELINE = Path(__file__).resolve().parent.parent / "results" / "baselines" / "cpu-quick"


# the rounds of attention reversed, of dss swapped in pairs: each pairing of two of these orders and the identity
# is an involution of the rounds, so a paired log ratio's noise is symmetric about 0 (median exactly 0)
ORDERS = {"attention": lambda z: z[::-1], "dss": lambda z: z.reshape(-1, 2)[:, ::-1].ravel()}


def plant(run, laws, *, repeats=20, spread=0.05, device="cpu", times=True, gauge=True, columns=COLUMNS, edit=None):
    """laws: {(model, mode) or (model, mode, kernel_N): {seq_len: time_ms, or None for an OOM}} -> run/scaling.csv.
    A cell's repeats are time_ms * (1 + spread * z), z evenly spaced over [-1, 1]: their median is time_ms, and
    more repeats of the same spread pin it down better. Their order differs by model (ORDERS, involutions of the
    rounds), so that the paired ratio of two models' rounds is noisy with its median the ratio of their
    time_ms. With `gauge`, the drift gauge took 1 ms in every round (gauge_times_ms). edit(row) may change a row
    before it is written."""
    run.mkdir(parents=True, exist_ok=True)
    with open(run / "scaling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        for (model, mode, *kernel_N), series in laws.items():
            for seq_len, time_ms in series.items():
                z = ORDERS.get(model, lambda z: z)(np.linspace(-1, 1, repeats))
                repeats_ms = [] if time_ms is None else time_ms * (1 + spread * z)
                row = dict(
                    run_id=run.name,
                    model=model,
                    mode=mode,
                    dtype="float32",
                    device=device,
                    batch=1,
                    seq_len=seq_len,
                    dim=64,
                    compiled="false",
                    kernel_N=kernel_N[0] if kernel_N else "",
                    time_ms="" if time_ms is None else f"{time_ms:.6g}",
                    peak_mem_mb=1.0,
                    repeats=len(repeats_ms),
                    status="ok" if time_ms is not None else "oom",
                    times_ms=" ".join(f"{v:.6g}" for v in repeats_ms) if times else "",
                    gauge_times_ms=" ".join(["1"] * len(repeats_ms)) if times and gauge else "",
                )
                writer.writerow(edit(row) if edit else row)
    return run


def power_laws(c=2.0, lengths=LENGTHS):
    """gss = c L, attention = L^2 / 1000 (fwd): equal at L = 1000 c, gss faster above."""
    return {("gss", "fwd"): {L: c * L for L in lengths}, ("attention", "fwd"): {L: L * L / 1000 for L in lengths}}


def one(found, **where):
    rows = found
    for column, value in where.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_slope_of_exact_power_laws_is_the_exponent(tmp_path):
    laws = {**power_laws(), ("conv", "fwd"): {L: 0.01 * L**1.5 for L in LENGTHS}}
    found = findings.of_run(plant(tmp_path, laws))
    for model, exponent in (("gss", 1.0), ("conv", 1.5), ("attention", 2.0)):
        r = one(found, finding="slope", model=model)
        assert r.value == pytest.approx(exponent, abs=1e-5) and r.ci_low < r.value < r.ci_high
        assert (r.unit, r.other, r.detail) == ("exponent", "", "secant of seq_len 2048..8192")


def test_slope_fits_the_longest_max_3_half_lengths():
    assert [analysis.fitted_lengths(range(1, n + 1)) for n in (2, 3, 4, 6, 7)] == [
        [],
        [1, 2, 3],
        [2, 3, 4],
        [4, 5, 6],
        [4, 5, 6, 7],
    ]


@pytest.mark.parametrize("n", [3, 4, 7])
def test_a_kink_below_the_fitted_lengths_does_not_move_the_slope(tmp_path, n):
    lengths = [2 ** (13 - n + 1 + i) for i in range(n)]  # n lengths up to 8192
    fitted = lengths[-max(3, math.ceil(n / 2)) :]
    # exactly L^1.5 over the fitted lengths, L^3 below them (joined at the first fitted one)
    times = {n: n**1.5 if n >= fitted[0] else fitted[0] ** 1.5 * (n / fitted[0]) ** 3 for n in lengths}
    r = one(findings.of_run(plant(tmp_path, {("gss", "fwd"): times})), finding="slope")
    secant = "secant of " if len(fitted) == 3 else ""  # three lengths equally spaced on the log axis
    assert r.value == pytest.approx(1.5) and r.detail == f"{secant}seq_len {fitted[0]}..{fitted[-1]}"
    kinked = {n: t * (10 if n == fitted[0] else 1) for n, t in times.items()}  # a kink inside them does move it
    r = one(findings.of_run(plant(tmp_path, {("gss", "fwd"): kinked})), finding="slope")
    assert r.value < 1.4


def test_no_slope_under_3_lengths_and_a_failed_cell_is_no_length(tmp_path):
    found = findings.of_run(
        plant(
            tmp_path,
            {("gss", "fwd"): {256: 1.0, 512: 2.0, 1024: None}, ("attention", "fwd"): {256: 1.0, 512: 2.0, 1024: 4.0}},
        )
    )
    assert list(found[found.finding == "slope"].model) == ["attention"]


def widths(found):
    return (found.ci_high - found.ci_low).to_numpy()


def test_the_interval_holds_the_estimate_and_shrinks_with_more_repeats(tmp_path):
    laws = {**power_laws(), ("conv", "fwd"): {L: 0.01 * L**1.5 for L in LENGTHS}}
    few, many = (findings.of_run(plant(tmp_path / str(n), laws, repeats=n, spread=0.1)) for n in (10, 40))
    # 3 slopes, 2 differences of slopes, gss over attention, 2 speed-ups
    assert list(few.detail) == list(many.detail) and len(few) == 8
    for found in (few, many):
        assert ((found.ci_low < found.value) & (found.value < found.ci_high)).all(), found
    assert (widths(many) < 0.7 * widths(few)).all(), (widths(few), widths(many))


def test_the_same_run_gives_the_same_intervals_and_a_cell_its_draws_whatever_else_the_run_holds(tmp_path):
    laws = {**power_laws(), ("conv", "fwd"): {L: 0.01 * L**1.5 for L in LENGTHS}}
    df = analysis.load_scaling(plant(tmp_path, laws, spread=0.1))
    full = findings.compute(df)
    pd.testing.assert_frame_equal(full, findings.compute(df))
    alone = findings.compute(df[df.model != "conv"])  # gss and attention only: their crossover's interval is the same
    cross = one(full, finding="crossover", model="gss", other="attention")
    assert one(alone, finding="crossover", model="gss").ci_low == cross.ci_low


def test_intervals_are_empty_without_times_ms(tmp_path):
    older = plant(tmp_path / "older", power_laws(), columns=[c for c in COLUMNS if c != "times_ms"])
    empty = plant(tmp_path / "empty", power_laws(), times=False)
    for run in (older, empty):
        found = findings.write(run)
        assert len(found) == 5 and found.ci_low.isna().all() and found.ci_high.isna().all()
        with open(run / "findings.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert {(r["ci_low"], r["ci_high"]) for r in rows} == {("", "")}
        assert one(found, finding="crossover").value == pytest.approx(2000)
    # one cell without repeats: the findings that use it have no interval, the others keep theirs
    one_cell = plant(
        tmp_path / "one",
        power_laws(),
        edit=lambda row: {
            **row,
            "times_ms": "" if (row["model"], row["seq_len"]) == ("attention", 256) else row["times_ms"],
        },
    )
    found = findings.of_run(one_cell).set_index("finding")
    assert pd.isna(found.loc["crossover"].ci_low)  # it uses every common length
    assert found.ci_low.notna().sum() == 4  # both slopes and their difference (2048..8192), the speed-up at 8192


def test_a_planted_crossing_has_its_interval(tmp_path):
    run = plant(tmp_path, power_laws(), spread=0.1)
    r = one(findings.of_run(run), finding="crossover")
    series = analysis.length_series(analysis.load_scaling(run), mode="fwd", dtype="float32")
    assert r.value == pytest.approx(2000) == analysis.crossover(series["gss"], series["attention"])
    assert (r.model, r.other, r.unit, r.detail) == ("gss", "attention", "tokens", "between seq_len 1024 and 2048")
    assert 1024 < r.ci_low < 2000 < r.ci_high < 2048 * 1.5


def test_the_vectorised_crossover_is_analysis_crossover():
    rng = np.random.default_rng(1)
    lengths = [2**k for k in range(8, 15)]
    ratios = rng.normal(scale=0.8, size=(500, len(lengths))) + np.linspace(0.6, -0.6, len(lengths))
    fast = findings.crossover(lengths, ratios)
    for log_ratio, got in zip(ratios, fast, strict=True):
        a, b = pd.Series(np.exp(log_ratio), index=lengths), pd.Series(1.0, index=lengths)
        expected = analysis.crossover(a, b)
        assert (np.isnan(got) and expected is None) or got == pytest.approx(expected)
    assert 50 < np.isnan(fast).sum() < 450  # both kinds were tried


def ratio_run(run, ratio, **how):
    """gss / attention = ratio at LENGTHS, attention L ms."""
    laws = {
        ("gss", "fwd"): {L: r * L for L, r in zip(LENGTHS, ratio, strict=True)},
        ("attention", "fwd"): {L: float(L) for L in LENGTHS},
    }
    return findings.of_run(plant(run, laws, **how))


def share(detail, pattern):
    return float(re.search(pattern + r" in (\d+\.\d)%", detail)[1])


def test_a_crossover_interval_counts_the_resamples_without_one_at_the_edge_of_the_grid(tmp_path):
    """Unconditional: a resample without a crossover is kept, at the longest length where gss is not faster there
    (it never becomes faster) and at the shortest where it is faster already; the interval reaching past the grid
    then has that length as its end, and says so."""
    above = one(
        ratio_run(tmp_path / "above", [1.3, 1.2, 1.1, 1.05, 1.02, 0.99], repeats=10, spread=0.1), finding="crossover"
    )
    assert above.detail.startswith("between seq_len 4096 and 8192; the interval reaches above the grid (not faster")
    assert 5 < share(above.detail, "not faster at seq_len 8192") < 95
    assert above.ci_low < above.value < above.ci_high == 8192
    below = one(ratio_run(tmp_path / "below", [1.01, 0.8, 0.7, 0.6, 0.5, 0.4], spread=0.1), finding="crossover")
    assert below.detail.startswith("between seq_len 256 and 512; the interval reaches below the grid (faster already")
    assert 2.5 <= share(below.detail, "faster already at seq_len 256") < 60
    assert below.ci_low == 256 < below.value < below.ci_high < 512
    # the rule before: the interval over the resamples with a crossover, all above 256
    df = analysis.load_scaling(tmp_path / "below")
    conditional = one(findings.compute(df, conditional=True), finding="crossover")
    assert conditional.value == below.value and conditional.ci_low > 256 and "no crossover in" in conditional.detail


def test_a_crossover_of_the_resamples_only_is_reported_at_the_grids_edge_and_one_past_both_ends_withheld(tmp_path):
    edge = one(ratio_run(tmp_path / "edge", [0.995, 0.8, 0.7, 0.6, 0.5, 0.4], spread=0.1), finding="crossover")
    assert (edge.value, edge.ci_low) == (256, 256) and 256 < edge.ci_high < 512
    assert edge.detail.startswith("at or below seq_len 256 (faster at every common length); the interval reaches")
    assert share(edge.detail, "faster already at seq_len 256") > 50
    far = ratio_run(tmp_path / "far", [0.9, 0.8, 0.7, 0.6, 0.5, 0.4], spread=0.1)
    assert "crossover" not in set(far.finding)  # faster at every length in every resample: none
    flat = one(ratio_run(tmp_path / "flat", [1.01, 1.0, 1.0, 1.0, 1.0, 0.99], spread=0.1), finding="crossover")
    assert pd.isna(flat.ci_low) and pd.isna(flat.ci_high)
    assert "interval withheld: it reaches below and above the grid (faster already at seq_len 256 in" in flat.detail


def test_speedup_over_attention_at_the_longest_common_length_and_options_in_detail(tmp_path):
    longer = [*LENGTHS, 16384]
    found = findings.of_run(
        plant(
            tmp_path,
            {
                ("gss", "fwd", "64"): {L: 1.0 * L for L in longer},
                ("gss", "fwd", "512"): {L: 2.0 * L for L in longer},
                ("attention", "fwd"): {**{L: L * L / 1000 for L in LENGTHS[:-1]}, 8192: None},
            },
        )
    )
    fast = one(found, finding="speedup", detail="kernel_N=64; at seq_len 4096")
    assert (fast.model, fast.other, fast.unit) == ("gss", "attention", "x")
    # the repeats as written: 6 significant digits
    assert fast.value == pytest.approx(4096 / 1000, rel=1e-5) and fast.ci_low < fast.value < fast.ci_high
    assert one(found, finding="speedup", detail="kernel_N=512; at seq_len 4096").value == pytest.approx(
        4096 / 2000, rel=1e-5
    )
    assert one(found, finding="slope", detail="kernel_N=512; seq_len 2048..16384").value == pytest.approx(1.0)
    assert one(found, finding="crossover", detail="kernel_N=64; between seq_len 512 and 1024").value == pytest.approx(
        1000, rel=1e-5
    )  # the times as written: 6 significant digits


def test_several_runs_are_pooled_into_median_and_range(tmp_path, capsys):
    runs = [plant(tmp_path / f"r{c}", power_laws(c)) for c in (1.5, 2.0, 3.0)]  # crossovers 1500, 2000, 3000
    assert findings.main([str(r) for r in runs]) == 0
    out = capsys.readouterr().out
    assert all((r / "findings.csv").is_file() for r in runs)
    pooled = out.split("across 3 runs")[1].splitlines()
    assert re.search(
        r"^crossover +fwd +float32 +gss +attention +2,000 +1,500\.\.3,000 +tokens +3/3 ", "\n".join(pooled), re.M
    ), out
    table = findings.pool({r: findings.of_run(r) for r in runs}).set_index("finding")
    cross = table.loc["crossover", ["median", "low", "high", "runs"]].tolist()
    assert cross == pytest.approx([2000, 1500, 3000, 3], rel=1e-5)  # the times as written: 6 significant digits
    speedup = table.loc["speedup"]  # 8192 / 1000 / c
    assert [speedup["median"], speedup.low, speedup.high] == pytest.approx([4.096, 8.192 / 3, 8.192 / 1.5])
    assert f"{runs[0] / 'findings.csv'}: 5 findings" in out


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda row: {**row, "device": "cuda:NVIDIA H200"}, "different devices (cpu vs cuda:NVIDIA H200)"),
        (
            lambda row: {**row, "seq_len": 16384} if row["seq_len"] == 8192 and row["model"] == "gss" else row,
            "different grids (1 cells only in",
        ),
    ],
)
def test_runs_that_cannot_be_pooled_exit_2_with_one_line(tmp_path, capsys, edit, message):
    a, b = plant(tmp_path / "a", power_laws()), plant(tmp_path / "b", power_laws(), edit=edit)
    assert findings.main([str(a), str(b)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: cannot pool") and message in err and len(err.splitlines()) == 1
    assert not (a / "findings.csv").exists() and not (b / "findings.csv").exists()


@pytest.mark.parametrize("bad", ["1.0 x 2.0", "1.0 nan", "-1 2", "1,2"])
def test_malformed_times_ms_exits_2_naming_the_cell(tmp_path, capsys, bad):
    run = plant(
        tmp_path / "run",
        power_laws(),
        edit=lambda row: {
            **row,
            "times_ms": bad if (row["model"], row["seq_len"]) == ("gss", 512) else row["times_ms"],
        },
    )
    for main, flags in ((findings.main, []), (report.main, []), (plots.main, ["--out", str(tmp_path / "figs")])):
        assert main([str(run), *flags]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and f"malformed times_ms {bad!r} in the ok cell model=gss mode=fwd" in err
        assert "seq_len=512" in err
    assert sorted(p.name for p in run.iterdir()) == ["scaling.csv"] and not (tmp_path / "figs").exists()


def test_the_report_lists_every_finding_with_its_interval(tmp_path):
    run = plant(tmp_path / "run", power_laws(), spread=0.1)
    text = report.write_report(run, plots_dir=tmp_path / "none").read_text()
    section = text.split("### Findings with 95% intervals")[1].split("\n## ")[0]
    with open(run / "findings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(r["ci_low"] and r["ci_high"] for r in rows)
    cross = next(r for r in rows if r["finding"] == "crossover")
    low, high = float(cross["ci_low"]), float(cross["ci_high"])
    expected = (
        f"| crossover | fwd | float32 | gss | attention | 2,000 | {low:,.0f}..{high:,.0f} | tokens | between seq_len"
    )
    assert expected + " 1024 and 2048 |" in section.splitlines()
    assert (
        section.count("\n| slope | fwd | float32 |") == 2
        and "| speedup | fwd | float32 | gss | attention | 4.10 |" in section
    )
    assert "empty where the cells have no recorded repeats" not in section
    out = tmp_path / "elsewhere"  # a report elsewhere takes findings.csv with it; the run gets nothing new
    (run / "findings.csv").unlink()
    report.write_report(run, plots_dir=out, report_dir=out)
    assert (out / "findings.csv").read_text().count("\n") == 6 and not (run / "findings.csv").exists()


def test_the_committed_references_findings_with_and_without_intervals():
    """The CPU reference records times_ms, the drift gauge's times and three seeds per model: every finding, speed
    and quality, has an interval around its value, its slopes relative to the gauge; its roofline fractions (one
    cell against limits measured once) have none, by design. The GPU reference was made before times_ms existed,
    with one seed: its findings have none."""
    found = findings.of_run(BASELINE)
    speed = {"slope", "slope_diff", "crossover", "speedup"}
    assert set(found.finding) == speed | {"bits_per_byte", "bits_per_byte_diff", "recall_accuracy", "roofline_frac"}
    fractions, found = found[found.finding == "roofline_frac"], found[found.finding != "roofline_frac"]
    assert len(fractions) == 13 and fractions.ci_low.isna().all() and fractions.value.between(0, 1.05).all()
    assert found.ci_low.notna().all() and ((found.ci_low <= found.value) & (found.value <= found.ci_high)).all()
    slopes = found[found.finding == "slope"]
    assert len(slopes) == 13 and not slopes.detail.str.contains("no drift gauge").any()  # 7 models fwd, 6 fwdbwd
    assert slopes.detail.str.startswith("secant of seq_len ").all()  # three log-spaced lengths: a secant
    df = analysis.load_scaling(BASELINE)
    series = analysis.length_series(df, mode="fwd", dtype="float32")
    rows = [analysis.model_sweeps(df, m, mode="fwd")[m] for m in ("gss", "attention")]
    cross = one(found, finding="crossover", mode="fwd", model="gss", other="attention").value
    assert cross == pytest.approx(analysis.crossover(series["gss"], series["attention"], rows))  # paired rounds
    # unconditional crossovers: one whose resamples fall below the grid reaches down to the shortest common length
    below = found[found.detail.str.contains("the interval reaches below the grid")]
    shortest = df.groupby(["model", "mode"]).seq_len.min()
    assert [(r.model, r.other, r.mode, r.ci_low) for r in below.itertuples()] == [
        ("gss", "gss-direct", "fwd", 512),
        ("gss-fast", "conv", "fwd", 256),
        ("attention-chunked", "attention", "fwd", 256),
        ("gss-fast", "attention", "fwdbwd", 256),
        ("gss-fast", "attention-chunked", "fwdbwd", 256),
        ("attention-chunked", "attention", "fwdbwd", 256),
    ]
    assert all(r.ci_low == max(shortest[r.model, r.mode], shortest[r.other, r.mode]) for r in below.itertuples())
    counts = found.finding.value_counts()  # four models, every pair of them
    assert (counts["bits_per_byte"], counts["bits_per_byte_diff"], counts["recall_accuracy"]) == (4, 6, 4)
    # quality over the three seeds at each model's selected rate: mean ± t(0.975, 2) sd / sqrt(3), t = 4.303
    ppl = pd.read_csv(BASELINE / "perplexity.csv")
    gss = ppl[(ppl.model == "gss") & (ppl.split == "test") & (ppl.eval_seq_len == ppl.train_seq_len)]
    seeds = gss[gss.lr_selected].bits_per_byte
    mean, half = seeds.mean(), 4.302653 * seeds.std() / 3**0.5
    bpb = one(found, finding="bits_per_byte", model="gss")
    assert (bpb.value, bpb.ci_low, bpb.ci_high) == pytest.approx((mean, mean - half, mean + half), rel=1e-5)
    assert (
        bpb.unit == "bits/byte" and bpb.detail == "stdlib, seq_len 256; lr 0.012; 3 seeds; Student's t over seeds, 2 df"
    )
    recall = one(found, finding="recall_accuracy", model="attention")  # 0.997, 0.996, 0.991: clipped at 1
    assert (recall.value, recall.ci_low, recall.ci_high) == pytest.approx((0.994792, 0.986994, 1.0), abs=1e-6)
    gpu = findings.of_run(BASELINE.parent / "nvidia-h200")
    assert gpu.ci_low.isna().all() and gpu.ci_high.isna().all()
    quality = gpu[gpu.finding.isin(["bits_per_byte", "bits_per_byte_diff", "recall_accuracy"])]
    assert len(quality) == 4 + 6 + 4 and quality.detail.str.endswith("1 seed; 1 seed: no interval").all()


@pytest.fixture
def drawn(monkeypatch):
    """The figures the scaling plots save, kept instead of written."""
    figures = []
    monkeypatch.setattr(scaling_plots, "_save", lambda fig, out_path: figures.append(fig) or out_path)
    return figures


def test_the_time_figure_shades_the_crossover_interval(tmp_path, drawn):
    df = analysis.load_scaling(plant(tmp_path / "run", power_laws(), spread=0.1))
    plots.plot_time(df, "time.png", mode="fwd")
    cross = one(findings.compute(df), finding="crossover")
    (band,) = drawn[0].axes[0].patches
    assert (band.get_x(), band.get_x() + band.get_width()) == pytest.approx((cross.ci_low, cross.ci_high))
    assert band.get_x() < 2000 < band.get_x() + band.get_width()
    plots.plot_time(analysis.load_scaling(plant(tmp_path / "older", power_laws(), times=False)), "t.png", mode="fwd")
    assert len(drawn[1].axes[0].patches) == 0 and len(drawn[1].axes[0].lines) > 2  # the crossover line, no band
