"""The regression gate: exact checks, noise-aware times, relative mode, and the exit codes."""

import csv
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench import regress, stats
from bench.schema import TABLES

COLUMNS = TABLES["scaling.csv"].columns

ROOT = Path(__file__).resolve().parent.parent
TIMES = {"gss": {512: 40.0, 1024: 80.0}, "attention": {512: 20.0, 1024: 60.0}, "conv": {512: 10.0, 1024: 20.0}}


def scaling_rows(*, scale=1.0, device="cpu", iqr_fraction=0.01, repeats=10, edit=None, spread=None):
    """Every cell of TIMES, ok; spread: its repeats as fractions of its median (times_ms; none by default)."""
    rows = []
    for model, series in TIMES.items():
        for seq_len, time_ms in series.items():
            row = dict(
                run_id="r",
                model=model,
                mode="fwdbwd",
                dtype="float32",
                device=device,
                batch=1,
                seq_len=seq_len,
                dim=64,
                kernel_N=512 if model == "gss" else "",
                kernel_H=256 if model != "attention" else "",
                lambda_imag_exp="true" if model == "gss" else "",
                conv_kernel=64 if model == "conv" else "",
                compiled="false",
                params=1000,
                flops=10**9 * seq_len,
                time_ms=time_ms * scale,
                time_iqr_ms=time_ms * scale * iqr_fraction,
                repeats=repeats,
                peak_mem_mb=seq_len / 8,
                status="ok",
                error="",
                times_ms=" ".join(f"{time_ms * scale * f:.6g}" for f in spread or ()),
            )
            if edit:
                edit(row)
            rows.append(row)
    return rows


def write(run_dir, name, columns, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / name, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return run_dir


def gate(tmp_path, capsys, baseline_rows, current_rows, *flags):
    base = write(tmp_path / "base", "scaling.csv", COLUMNS, baseline_rows)
    cur = write(tmp_path / "cur", "scaling.csv", COLUMNS, current_rows)
    code = regress.main(["--baseline", str(base), "--current", str(cur), *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def slower(model, seq_len, factor, column="time_ms"):
    def edit(row):
        if row["model"] == model and row["seq_len"] == seq_len:
            row[column] = row[column] * factor

    return edit


def test_an_identical_rerun_passes(tmp_path, capsys):
    code, out, _ = gate(tmp_path, capsys, scaling_rows(), scaling_rows())
    assert code == 0 and "6 cells compared" in out and "0 regressions" in out


def test_a_planted_slowdown_fails_and_names_the_cell(tmp_path, capsys):
    code, out, _ = gate(tmp_path, capsys, scaling_rows(), scaling_rows(edit=slower("gss", 1024, 2.0)))
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith("regression") and "model=gss" in first and "seq_len=1024" in first and "+100.0%" in first


def test_a_baseline_edited_to_be_faster_fails_in_relative_mode(tmp_path, capsys):
    code, out, _ = gate(tmp_path, capsys, scaling_rows(edit=slower("conv", 512, 0.5)), scaling_rows(), "--relative")
    assert code == 1 and "model=conv" in out.splitlines()[0] and "time ratio to attention" in out


def test_slowdowns_within_the_measured_noise_pass(tmp_path, capsys):
    noisy = dict(iqr_fraction=0.6, repeats=3)
    tolerance = ["--tolerance", "0.3"]  # the noise term decides here, whatever the default tolerance
    code, _, _ = gate(
        tmp_path, capsys, scaling_rows(**noisy), scaling_rows(**noisy, edit=slower("gss", 512, 1.5)), *tolerance
    )
    assert code == 0
    code, _, _ = gate(tmp_path, capsys, scaling_rows(), scaling_rows(edit=slower("gss", 512, 1.5)), *tolerance)
    assert code == 1


# 30 repeats, as fractions of their median, whose quartiles are 0.5 and 1.5 under any quantile method (ranks 6-8
# and 21-23): an IQR of 1.0. They differ only in ranks 9-20, the order statistics that bound the median's 95%
# interval at 30 repeats (ranks 9 and 20), and not the quartiles: so only the repeats can tell them apart.
OUTER = ([0.30, 0.35, 0.40, 0.42, 0.44, 0.46, 0.5, 0.5, 0.5], [1.5, 1.5, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.2])
TIGHT = [0.99, 0.992, 0.994, 0.996, 0.998, 1.0, 1.0, 1.002, 1.004, 1.006, 1.008, 1.01]
WIDE = [0.55, 0.6, 0.7, 0.8, 0.9, 1.0, 1.0, 1.1, 1.2, 1.3, 1.4, 1.45]


def repeats_around(inner):
    """The 30 repeats around `inner`, in a run order that is not sorted."""
    ordered = OUTER[0] + inner + OUTER[1]
    return ordered[1::2] + ordered[::2]


def slower_repeats(model, seq_len, factor):
    """slower(), with the cell's IQR and every repeat."""

    def edit(row):
        if row["model"] == model and row["seq_len"] == seq_len:
            row.update(
                time_ms=row["time_ms"] * factor,
                time_iqr_ms=row["time_iqr_ms"] * factor,
                times_ms=" ".join(f"{float(t) * factor:.6g}" for t in row["times_ms"].split()),
            )

    return edit


def test_the_repeats_themselves_give_the_noise_term_when_a_run_has_them(tmp_path, capsys):
    """Same medians, IQRs and repeat counts, the same 1.5x slow-down of one cell: from the IQR (no times_ms) the
    noise is 72%, and the cell passes; from repeats whose median is tightly bound it is 2.1%, and the cell fails;
    from repeats as widely spread as the IQR it is 94%, and the cell passes."""
    assert statistics.median(repeats_around(TIGHT)) == statistics.median(repeats_around(WIDE)) == 1.0
    for method in ("inclusive", "exclusive"):
        quartiles = [statistics.quantiles(repeats_around(inner), n=4, method=method) for inner in (TIGHT, WIDE)]
        assert quartiles[0][0] == quartiles[1][0] == 0.5 and quartiles[0][2] == quartiles[1][2] == 1.5
    for name, inner, verdict, noise, relative_noise in [
        ("iqr", None, 0, "72.0%", "101.8%"),
        ("tight", TIGHT, 1, "2.1%", "3.0%"),
        ("wide", WIDE, 0, "94.2%", "133.3%"),
    ]:
        rows = dict(iqr_fraction=1.0, repeats=30, spread=inner and repeats_around(inner))
        base = scaling_rows(**rows)
        for mode in ((), ("--relative",)):  # relative: the attention cell's repeats give its noise too
            cur = scaling_rows(**rows, edit=slower_repeats("gss", 512, 1.5))
            assert gate(tmp_path / name / "1.5", capsys, base, cur, "--tolerance", "0.3", *mode)[0] == verdict
            # tripled, the cell fails in every case, and shows the noise term
            cur = scaling_rows(**rows, edit=slower_repeats("gss", 512, 3.0))
            code, out, _ = gate(tmp_path / name / "3", capsys, base, cur, "--tolerance", "0.3", *mode)
            assert code == 1 and f"(+200.0%; tolerance 30%, noise {relative_noise if mode else noise})" in out, out


def test_the_standard_error_of_a_median_from_its_repeats_or_its_iqr():
    z = statistics.NormalDist().inv_cdf
    ten = " ".join(
        str(t) for t in (7, 3, 10, 1, 5, 2, 9, 4, 8, 6)
    )  # ranks 1 and 8 bound 97.9%: P(Bin(10) <= 1) = 11/1024
    assert stats.standard_error_ms(dict(times_ms=ten, time_iqr_ms=100, repeats=10)) == pytest.approx(
        (9 - 2) / (2 * z(1 - 11 / 1024)), rel=1e-12
    )
    assert stats.standard_error_ms(dict(times_ms="5 1 3 2 4", time_iqr_ms=100, repeats=5)) == pytest.approx(
        (5 - 1) / (2 * z(1 - 1 / 32)), rel=1e-12
    )  # under 6 repeats: the smallest and largest, 93.75%
    assert stats.standard_error_ms(dict(times_ms="3", time_iqr_ms=0, repeats=1)) == 0.0
    for older in (dict(times_ms=""), {}):  # an older run: from the IQR, 1.2533 (IQR / 1.349) / sqrt(repeats)
        assert stats.standard_error_ms(dict(older, time_iqr_ms=2.698, repeats=4)) == pytest.approx(1.2533, rel=1e-12)
    merged = dict(times_ms_b="", time_iqr_ms_b=2.698, repeats_b=4, times_ms_c="1 2 3 4 5", time_iqr_ms_c=0, repeats_c=5)
    assert stats.standard_error_ms(merged, "_b") == pytest.approx(1.2533, rel=1e-12)  # a gate's joined row
    assert stats.standard_error_ms(merged, "_c") == pytest.approx((5 - 1) / (2 * z(1 - 1 / 32)), rel=1e-12)


def test_a_baseline_without_times_ms_gates_a_current_run_with_them(tmp_path, capsys):
    """The committed references have no times_ms column: each side's noise comes from what it has."""
    older = [c for c in COLUMNS if c not in ("times_ms", "gauge_times_ms", "gpu_ms", "gpu_times_ms", "gpu_note")]
    base = write(tmp_path / "base", "scaling.csv", older, scaling_rows(iqr_fraction=1.0, repeats=30))
    assert "times_ms" not in (base / "scaling.csv").read_text()
    slower_gss = slower_repeats("gss", 1024, 2.0)
    for name, edit, code, shown in [
        ("same", None, 0, "0 regressions"),
        ("slower", slower_gss, 1, "(+100.0%; tolerance 49%, noise 50.9%)"),
    ]:
        cur = write(
            tmp_path / name,
            "scaling.csv",
            COLUMNS,
            scaling_rows(iqr_fraction=1.0, repeats=30, spread=repeats_around(TIGHT), edit=edit),
        )
        assert regress.main(["--baseline", str(base), "--current", str(cur)]) == code
        out = capsys.readouterr().out
        assert "6 cells compared" in out and shown in out, out
        assert regress.main(["--baseline", str(cur), "--current", str(base)]) == 0  # and the other way round
        capsys.readouterr()


def test_the_gauge_times_are_not_gated(tmp_path, capsys):
    """gauge_times_ms serves the findings' slopes (bench.analysis.series): the gate compares cells, whatever the
    gauge took, and reads a run without it alike."""

    def gauge(ms):
        def edit(row):
            row["gauge_times_ms"] = " ".join([f"{ms:.6g}"] * 12)

        return edit

    spread = repeats_around(TIGHT)[:12]
    base, cur = (scaling_rows(repeats=12, spread=spread, edit=gauge(ms)) for ms in (1.0, 3.0))
    code, out, _ = gate(tmp_path, capsys, base, cur)
    assert code == 0 and "6 cells compared" in out and "0 regressions" in out
    code, out, _ = gate(tmp_path, capsys, base, scaling_rows(repeats=12, spread=spread, edit=slower("gss", 1024, 2.0)))
    assert code == 1 and "model=gss" in out.splitlines()[0]


def test_the_default_cpu_tolerance_passes_the_measured_spread_and_fails_a_doubling(tmp_path, capsys):
    spread = 0.163  # the largest change of a time ratio between two identical interleaved quick runs here
    assert regress.TIME_TOLERANCE["cpu"] >= 3 * spread
    assert (
        gate(tmp_path / "a", capsys, scaling_rows(), scaling_rows(edit=slower("gss", 1024, 1 + spread)), "--relative")[
            0
        ]
        == 0
    )
    assert (
        gate(tmp_path / "b", capsys, scaling_rows(), scaling_rows(edit=slower("gss", 1024, 2.0)), "--relative")[0] == 1
    )


def test_a_uniformly_slower_machine_passes_relative_but_not_absolute(tmp_path, capsys):
    assert gate(tmp_path, capsys, scaling_rows(), scaling_rows(scale=1.8), "--relative")[0] == 0
    assert gate(tmp_path, capsys, scaling_rows(), scaling_rows(scale=1.8))[0] == 1


@pytest.mark.parametrize("column,factor", [("flops", 2), ("params", 3)])
def test_a_changed_count_fails_even_in_relative_mode(tmp_path, capsys, column, factor):
    code, out, _ = gate(
        tmp_path, capsys, scaling_rows(), scaling_rows(edit=slower("attention", 512, factor, column)), "--relative"
    )
    assert code == 1 and f"{column} changed" in out


def test_memory_beyond_tolerance_fails(tmp_path, capsys):
    code, out, _ = gate(tmp_path, capsys, scaling_rows(), scaling_rows(edit=slower("conv", 1024, 1.05, "peak_mem_mb")))
    assert code == 1 and "peak_mem_mb 128 -> 134.4 (+5.0%)" in out
    assert gate(tmp_path, capsys, scaling_rows(), scaling_rows(edit=slower("conv", 1024, 1.01, "peak_mem_mb")))[0] == 0


def test_ok_then_oom_is_a_regression_and_one_sided_cells_are_listed(tmp_path, capsys):
    def oom(row):
        if row["model"] == "gss" and row["seq_len"] == 1024:
            row.update(status="oom", time_ms="", error="OutOfMemoryError")

    current = [r for r in scaling_rows(edit=oom) if not (r["model"] == "conv" and r["seq_len"] == 512)]
    code, out, _ = gate(tmp_path, capsys, scaling_rows(), current)
    assert code == 1
    assert "status ok -> oom" in out.splitlines()[0]
    assert any(line.startswith("only-baseline") and "model=conv" in line for line in out.splitlines())


def test_another_device_class_cannot_be_compared(tmp_path, capsys):
    code, out, err = gate(tmp_path, capsys, scaling_rows(device="cuda:NVIDIA H100"), scaling_rows())
    assert code == 2 and out == ""
    assert err == "error: the baseline ran on cuda and the current run on cpu: not comparable\n"


@pytest.mark.parametrize("content", ["model,mode\ngss,fwd\n", "\x00\x01garbage", ""])
def test_a_malformed_baseline_exits_2_with_one_line(tmp_path, content):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "scaling.csv").write_text(content)
    write(tmp_path / "cur", "scaling.csv", COLUMNS, scaling_rows())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.regress",
            "--baseline",
            str(tmp_path / "base"),
            "--current",
            str(tmp_path / "cur"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "edit,message",
    [
        (None, "missing columns time_ms"),
        (dict(time_ms=0), "time_ms='0' in an ok cell (model=gss mode=fwdbwd"),
        (dict(time_ms="abc"), "time_ms='abc' in an ok cell"),
        (dict(flops=""), "flops='' in an ok cell"),
        (
            dict(times_ms="40 abc 41"),
            "times_ms entry 'abc' in an ok cell (model=gss mode=fwdbwd dtype=float32 device=cpu "
            "batch=1 seq_len=512 dim=64 kernel_N=512 kernel_H=256 lambda_imag_exp=true "
            "compiled=false)",
        ),
        (dict(times_ms="40,41"), "times_ms entry '40,41' in an ok cell (model=gss"),
        (dict(times_ms="40 nan"), "times_ms entry 'nan' in an ok cell (model=gss"),
        (dict(times_ms="40 -1"), "times_ms entry '-1' in an ok cell (model=gss"),
        (dict(times_ms="40 0"), "times_ms entry '0' in an ok cell (model=gss"),
        (dict(times_ms="40 inf"), "times_ms entry 'inf' in an ok cell (model=gss"),
        (dict(times_ms="39 40 41"), "times_ms holds 3 times and repeats=10 in an ok cell (model=gss mode=fwdbwd"),
        (dict(times_ms=" ".join(["40"] * 11)), "times_ms holds 11 times and repeats=10 in an ok cell (model=gss"),
    ],
)
def test_a_current_run_with_bad_values_exits_2_not_1(tmp_path, capsys, edit, message):
    columns = [c for c in COLUMNS if edit is not None or c != "time_ms"]  # None: the column is missing
    rows = scaling_rows(edit=lambda r: r.update(edit) if edit and r["model"] == "gss" and r["seq_len"] == 512 else 0)
    base = write(tmp_path / "base", "scaling.csv", COLUMNS, scaling_rows())
    cur = write(tmp_path / "cur", "scaling.csv", columns, rows)
    assert regress.main(["--baseline", str(base), "--current", str(cur)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_cell_measured_twice_exits_2_and_a_torn_last_row_is_left_out(tmp_path, capsys):
    rows = scaling_rows()
    code, _, err = gate(tmp_path / "twice", capsys, rows, rows + rows[:1])
    assert code == 2 and "cell measured twice (model=gss" in err
    base = write(tmp_path / "base", "scaling.csv", COLUMNS, rows)
    cur = write(tmp_path / "cur", "scaling.csv", COLUMNS, rows)
    with open(cur / "scaling.csv", "a") as f:
        f.write("r,gss,fwdbwd,float32,cpu,1,2048,64,512,256,tr")  # a run killed mid-write
    assert regress.main(["--baseline", str(base), "--current", str(cur)]) == 0
    assert "6 cells compared" in capsys.readouterr().out


def test_relative_without_the_reference_model_exits_2(tmp_path, capsys):
    no_attention = [r for r in scaling_rows(scale=3.0) if r["model"] != "attention"]
    code, out, err = gate(tmp_path, capsys, scaling_rows(), no_attention, "--relative")
    assert code == 2 and out == ""
    assert err == (
        "error: --relative compares times as ratios to attention, and the current run has no ok "
        "attention cell in scaling.csv\n"
    )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--current", "x"], "required: --baseline"),
        (["--baseline", "a", "--current", "b", "--tolerance", "wide"], "invalid float"),
    ],
)
def test_a_bad_command_line_exits_2_with_one_line(capsys, argv, message):
    assert regress.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_a_missing_baseline_or_no_common_cell_exits_2(tmp_path, capsys):
    cur = write(tmp_path / "cur", "scaling.csv", COLUMNS, scaling_rows())
    assert regress.main(["--baseline", str(tmp_path / "nope"), "--current", str(cur)]) == 2
    other = write(tmp_path / "other", "scaling.csv", COLUMNS, scaling_rows(edit=lambda r: r.update(dim=128)))
    assert regress.main(["--baseline", str(other), "--current", str(cur)]) == 2
    assert "no cell in common" in capsys.readouterr().err


@pytest.mark.parametrize(
    "cpus, compared",
    [(("Intel Xeon", "AMD EPYC"), False), (("AMD EPYC", "AMD EPYC"), True), (("AMD EPYC", None), True)],
)
def test_times_are_not_compared_across_cpu_models_but_counts_and_memory_are(tmp_path, capsys, cpus, compared):
    """A time ratio across CPU models measures the hardware: a planted 3x slow-down passes between two models,
    fails on one; a changed FLOP count fails either way."""
    for side, cpu in zip(("base", "cur"), cpus):
        (tmp_path / side).mkdir()
        (tmp_path / side / "env.json").write_text("{}" if cpu is None else f'{{"cpu_model": "{cpu}"}}')
    code, out, _ = gate(tmp_path, capsys, scaling_rows(), scaling_rows(edit=slower("gss", 1024, 3.0)), "--relative")
    assert code == (1 if compared else 0)
    assert ("times not compared: the runs ran on different CPU models (AMD EPYC vs Intel Xeon)" in out) != compared
    code, out, _ = gate(tmp_path, capsys, scaling_rows(), scaling_rows(edit=slower("gss", 1024, 2.0, "flops")))
    assert code == 1 and "flops changed" in out
