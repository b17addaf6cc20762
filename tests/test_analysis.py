"""Findings from CSVs: slopes and crossovers on fixtures whose answers are known."""

import csv
import math
from pathlib import Path

import pandas as pd
import pytest

from bench import analysis, schema
from bench.analysis import (
    crossover,
    crossover_text,
    failed_cells,
    fitted_lengths,
    fitted_slope,
    length_series,
    load_csv,
    load_scaling,
    model_sweeps,
    option_ablation,
)
from bench.analysis.load import read_text, with_numbers
from bench.analysis.summaries import (
    bpb_table,
    curve_stats,
    decode_speedup,
    kernel_n_bpb,
    lambda_deltas,
    length_generalisation,
    lr_selection,
    numerics_worst,
    phase_bound_bpb,
    recall_stats,
    val_curves,
    with_labels,
)
from bench.schema import TABLES

COLUMNS = TABLES["scaling.csv"].columns


def write_fixture(path, times):
    """times: {(model, mode) or (model, mode, kernel_N): {seq_len: time_ms}} -> a scaling.csv in the suite's
    format."""
    with open(path / "scaling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        for (model, mode, *kernel_N), series in times.items():
            for seq_len, time_ms in series.items():
                writer.writerow(
                    dict(
                        run_id="fixture",
                        model=model,
                        mode=mode,
                        dtype="float32",
                        device="cpu",
                        batch=1,
                        seq_len=seq_len,
                        dim=64,
                        compiled="false",
                        time_ms=time_ms,
                        kernel_N=kernel_N[0] if kernel_N else "",
                        peak_mem_mb=1.0,
                        status="ok" if time_ms is not None else "oom",
                    )
                )


LENGTHS = [256, 512, 1024, 2048, 4096, 8192]


def test_slope_and_crossover_of_power_laws(tmp_path):
    # gss = 2 L, attention = L^2 / 1000: equal at L = 2000, gss faster above it
    write_fixture(
        tmp_path,
        {("gss", "fwdbwd"): {L: 2.0 * L for L in LENGTHS}, ("attention", "fwdbwd"): {L: L * L / 1000 for L in LENGTHS}},
    )
    series = length_series(load_scaling(tmp_path), mode="fwdbwd", dtype="float32")
    assert list(series) == ["gss", "attention"] and list(series["gss"].index) == LENGTHS
    gss, attention = series["gss"], series["attention"]
    assert fitted_slope(gss) == pytest.approx(1.0) and fitted_slope(attention) == pytest.approx(2.0)
    assert crossover(gss, attention) == pytest.approx(2000.0)
    assert crossover(attention, gss) is None and crossover(gss, gss) is None


def test_two_sweeps_of_equal_reach_are_both_kept_and_labelled(tmp_path):
    # --kernel-n 64,512 over the same lengths: two gss sweeps; gss N=64 is twice as fast as N=512
    write_fixture(
        tmp_path,
        {
            ("gss", "fwdbwd", "512"): {L: 2.0 * L for L in LENGTHS},
            ("gss", "fwdbwd", "64"): {L: 1.0 * L for L in LENGTHS},
            ("gss", "fwdbwd", "1024"): {1024: 5000.0},  # an ablation cell: not a sweep
            ("attention", "fwdbwd"): {L: L * L / 1000 for L in LENGTHS},
        },
    )
    df = load_scaling(tmp_path)
    assert list(model_sweeps(df, "gss", mode="fwdbwd")) == ["gss kernel_N=512", "gss kernel_N=64"]
    assert list(model_sweeps(df, "attention", mode="fwdbwd")) == ["attention"]
    series = length_series(df, mode="fwdbwd", dtype="float32")
    assert series["gss kernel_N=64"][8192] == 8192.0 and series["gss kernel_N=512"][8192] == 16384.0
    assert [text for *_, text in analysis.crossovers(df, mode="fwdbwd", dtype="float32")][:2] == [
        "gss kernel_N=512 faster than attention above seq_len ≈ 2,000",
        "gss kernel_N=64 faster than attention above seq_len ≈ 1,000",
    ]


def test_a_single_length_keeps_every_option_set_apart(tmp_path):
    write_fixture(
        tmp_path,
        {("gss", "fwd", "64"): {2048: 10.0}, ("gss", "fwd", "1024"): {2048: 30.0}, ("attention", "fwd"): {2048: 20.0}},
    )
    series = length_series(load_scaling(tmp_path), mode="fwd", dtype="float32")
    assert {k: v[2048] for k, v in series.items()} == {
        "gss kernel_N=64": 10.0,
        "gss kernel_N=1024": 30.0,
        "attention": 20.0,
    }


def test_failed_cells_are_gaps_and_no_crossover_is_reported_as_none(tmp_path):
    write_fixture(
        tmp_path,
        {("gss", "fwd"): {256: 10.0, 512: 20.0, 1024: None}, ("attention", "fwd"): {256: 1.0, 512: 2.0, 1024: 4.0}},
    )
    series = length_series(load_scaling(tmp_path), mode="fwd", dtype="float32")
    gss = series["gss"]
    assert list(gss.index) == [256, 512]
    assert crossover(gss, series["attention"]) is None
    assert fitted_slope(gss) is None  # two lengths: a line through two points is no fit


FIXTURE = Path(__file__).parent / "fixtures" / "run"


def test_a_sweep_keeps_its_failed_cells_and_leaves_the_ablations_out():
    df = load_scaling(FIXTURE)
    ((label, rows),) = model_sweeps(df, "gss-direct", mode="fwd").items()
    assert label == "gss-direct" and list(rows.seq_len) == [
        256,
        512,
        1024,
        2048,
        4096,
    ]  # full taps: conv_kernel == seq_len
    assert list(rows.status) == ["ok"] * 4 + ["error"]
    (rows,) = model_sweeps(df, "gss", mode="fwd").values()
    assert list(rows.kernel_N.unique()) == ["512"]  # not the kernel_N ablation


def test_option_ablation_includes_the_sweep_cell_at_the_ablation_length():
    df = load_scaling(FIXTURE)
    kernel = option_ablation(df, "kernel_N")
    assert sorted(kernel[(kernel["mode"] == "fwd") & (kernel.lambda_imag_exp == "true")].x) == [64, 256, 512, 1024]
    taps = option_ablation(df, "conv_kernel")
    assert sorted(taps[(taps.model == "conv") & (taps["mode"] == "fwd")].x) == [16, 64, 256, 1024]
    assert sorted(taps[(taps.model == "gss-direct") & (taps["mode"] == "fwd")].x) == [16, 64, 256, 1024, 2048]
    assert option_ablation(df[df.model == "attention"], "kernel_N") is None


def test_crossover_text_says_why_there_is_none():
    s = lambda values: pd.Series(values, index=[256, 512, 1024])  # noqa: E731
    assert (
        crossover_text(s([1, 2, 4]), s([2, 4, 8])) == "gss faster than attention at every measured length (256..1,024)"
    )
    assert (
        crossover_text(s([4, 8, 16]), s([1, 2, 4])) == "none: attention faster at seq_len 1,024 (longest common length)"
    )
    assert crossover_text(s([4, 4, 4]), s([1, 4, 16])) == "gss faster than attention above seq_len ≈ 512"


def test_lambda_deltas_are_paired_by_seed():
    d = lambda_deltas(load_csv(FIXTURE, "perplexity.csv"))
    assert list(d.kernel_N) == ["16", "64"] and list(d.n) == [2, 2]
    assert d.delta_mean.tolist() == pytest.approx([-0.11, -0.11])
    assert d.delta_std.tolist() == pytest.approx([0.02**0.5 / 10] * 2)


def ppl_fixture(edit=None):
    df = load_csv(FIXTURE, "perplexity.csv")
    return df if edit is None else edit(df)


def test_the_bits_per_byte_tables_hold_the_selected_rates_test_rows_only():
    # planted: validation rows differ from the test rows at every rate; raising them to 100 changes nothing
    raised = ppl_fixture(lambda df: df.assign(bits_per_byte=df.bits_per_byte.where(df.split == "test", 100.0)))
    for ppl in (ppl_fixture(), raised):
        bpb = bpb_table(ppl).set_index(["corpus", "label"])
        assert bpb.loc[("stdlib", "gss"), "mean"] == pytest.approx(2.41)  # seeds 0, 1 at 0.006: 2.40, 2.42
        assert bpb.loc[("stdlib", "conv"), "lr"] == "0.012" and bpb.loc[("stdlib", "conv"), "n"] == 2
        gen = length_generalisation(ppl).set_index(["corpus", "label", "ratio"])
        assert gen.loc[("stdlib", "attention", 4.0), "mean"] == pytest.approx(2.92)
        assert kernel_n_bpb(ppl)["mean"].tolist() == pytest.approx([2.065, 2.015])
        assert lambda_deltas(ppl).delta_mean.tolist() == pytest.approx([-0.11, -0.11])
    unselected = ppl_fixture(lambda df: df.assign(lr_selected="false"))
    assert bpb_table(unselected).empty and lambda_deltas(unselected).empty


def test_the_selected_rate_is_named_and_flagged_at_the_edge_of_its_grid():
    sel = lr_selection(ppl_fixture()).set_index(["corpus", "label"])
    grid = [0.002, 0.006, 0.012]
    assert sel.loc[("stdlib", "gss")].to_dict() == dict(
        model="gss", selected=[0.006], candidates=grid, edge=False, side="", val_bpb=pytest.approx(2.45)
    )
    assert sel.loc[("stdlib", "conv"), ["selected", "edge", "side"]].tolist() == [[0.012], True, "largest"]
    assert sel.loc[("stdlib", "attention"), ["selected", "edge", "side"]].tolist() == [[0.002], True, "smallest"]
    assert sel.loc[("synthetic", "gss N=16 λexp=false"), ["selected", "edge"]].tolist() == [[0.002], True]
    one = sel.loc[("synthetic", "attention")]  # a single rate: nothing selected, nothing to bracket
    assert one.candidates == [0.002] and not one.edge and pd.isna(one.val_bpb)


def test_validation_curves_mark_the_selected_rate():
    curves = val_curves(ppl_fixture())
    conv = curves[curves.label == "conv"]
    assert conv.lr.tolist() == [0.002, 0.006, 0.012] and conv["mean"].tolist() == pytest.approx([2.70, 2.60, 2.52])
    assert conv.selected.tolist() == [False, False, True]
    assert curves.selected.sum() == 7  # one per option set that selected; attention on synthetic had one rate
    assert val_curves(ppl_fixture(lambda df: df[df.split == "test"])).empty


def test_the_window_floor_gap_beside_the_entropy_floor_gap():
    bpb = bpb_table(ppl_fixture()).set_index(["corpus", "label"])
    r = bpb.loc[("synthetic", "gss N=64 λexp=true")]  # mean (1.95 + 1.97) / 2 = 1.96; floors 1.7 and 1.5
    assert (r.window_floor, r.window_gap, r.floor, r.gap) == pytest.approx((1.7, 0.26, 1.5, 0.46))
    assert bpb.loc[("synthetic", "attention"), "window_gap"] == pytest.approx(0.10)
    assert bpb.loc["stdlib"][["window_floor", "window_gap", "floor", "gap"]].isna().all().all()  # real text
    gen = length_generalisation(ppl_fixture())
    floors = gen[gen.label == "attention"].groupby(["corpus", "ratio"]).window_floor.max()
    assert floors["synthetic"].tolist() == [1.7, 1.5, 1.5] and floors["stdlib"].isna().all()
    assert phase_bound_bpb(256) == pytest.approx(math.log2(129) / 256)


def test_recall_reports_the_selected_rate_beside_chance():
    stats = recall_stats(load_csv(FIXTURE, "recall.csv")).set_index(["label", "seq_len"])
    gss = stats.loc[("gss", 64)]  # seeds 0.90, 0.86 at 0.006; the other rates' 0.40 and 0.60 left out
    assert (gss["mean"], gss.n, gss.chance, gss.ratio) == pytest.approx((0.88, 2, 0.25, 3.52))
    assert gss.selected == [0.006] and not gss.edge
    conv = stats.loc[("conv", 256)]
    assert (conv["mean"], conv.chance, conv.selected, conv.side) == (pytest.approx(0.065), 0.0625, [0.002], "smallest")
    assert ("attention", 1024) not in stats.index  # its one training failed


def test_training_curves_keep_the_selected_rate_when_perplexity_says_which():
    curve = load_csv(FIXTURE, "train_curve.csv")
    assert curve_stats(curve)["mean"].max() > 6  # every rate: the selection's others planted at 9 nats
    selected = curve_stats(curve, ppl_fixture())
    assert selected["mean"].max() < 6 and selected.groupby("label").n.max().to_dict()["gss"] == 2


def test_an_older_csv_reads_as_test_rows_of_its_one_rate(tmp_path):
    with open(FIXTURE / "perplexity.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    older = [c for c in TABLES["perplexity.csv"].columns if c not in ("split", "lr_selected", "window_floor_bpb")]
    with open(tmp_path / "perplexity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, older, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    df = load_csv(tmp_path, "perplexity.csv")
    assert df.attrs["older"] and set(df.split) == {"test"} and set(df.lr_selected) == {"true"}
    assert df.window_floor_bpb.isna().all() and not load_csv(FIXTURE, "perplexity.csv").attrs["older"]
    assert bpb_table(df)["mean"].tolist() == pytest.approx(bpb_table(ppl_fixture())["mean"].tolist())
    assert lr_selection(df).edge.tolist() == [False] * 8 and val_curves(df).empty


def test_labels_name_only_the_options_that_vary():
    labels = set(with_labels(load_csv(FIXTURE, "perplexity.csv")).label)
    assert labels == {
        "gss",
        "conv",
        "attention",
        "gss N=16 λexp=true",
        "gss N=16 λexp=false",
        "gss N=64 λexp=true",
        "gss N=64 λexp=false",
    }


def test_decode_speedup_and_numerics_worst():
    speed = decode_speedup(load_csv(FIXTURE, "decode.csv"))
    assert speed[speed.model == "gss"].speedup.tolist() == pytest.approx([1.6, 6.4, 25.6])
    assert set(speed[speed.model == "attention"].method) == {"kv_cache"}
    worst = numerics_worst(load_csv(FIXTURE, "numerics.csv"))
    assert worst.iloc[0].to_dict() == dict(
        dtype="bfloat16", error="out_rel_err", value=pytest.approx(0.012), model="attention", seq_len=4096
    )


def test_failed_cells_of_every_csv(tmp_path):
    failed = failed_cells(FIXTURE)
    assert sorted(failed.status) == ["error", "error", "error", "oom", "oom", "oom", "oom", "skipped", "skipped"]
    assert failed_cells(tmp_path).empty


def test_absent_csv_is_none_and_a_torn_last_line_is_ignored(tmp_path):
    assert load_csv(tmp_path, "decode.csv") is None
    (tmp_path / "recall.csv").write_text("model,seq_len,accuracy,status\ngss,64,0.9,ok\ngss,128,0.")
    df = load_csv(tmp_path, "recall.csv")
    assert len(df) == 1 and df.accuracy.tolist() == [0.9]


def test_a_slope_is_fitted_over_the_longest_max_3_half_of_the_lengths():
    assert fitted_lengths([1, 2]) == [] and fitted_lengths([4, 1, 2]) == [1, 2, 4]
    assert fitted_lengths(range(1, 8)) == [4, 5, 6, 7] and fitted_lengths(range(1, 6)) == [3, 4, 5]
    # a kink below the fitted lengths does not move the slope: seven lengths, the longest four fitted
    times = pd.Series({2**k: (99.0 if k < 3 else 2.0 ** (1.5 * k)) for k in range(7)})
    assert fitted_slope(times) == pytest.approx(1.5)
    times[2**3] *= 2  # the fourth-longest length is in the fit
    assert fitted_slope(times) < 1.5


def test_one_read_path_fills_older_columns_and_parses_the_schemas_numbers(tmp_path):
    """bench.analysis.load serves the read side and the gate alike: the text as written with older CSVs' columns
    filled in (a header-only CSV: an empty frame of its columns), then the schema's numeric columns parsed."""
    (tmp_path / "scaling.csv").write_text("model,seq_len,kernel_N,status\n")
    older = ["model", "seq_len", "kernel_N", "status", "times_ms", "gauge_times_ms", "min_bytes", "floor_ms"]
    older += ["roofline_frac", "gpu_ms", "gpu_times_ms", "gpu_note"]
    assert list(read_text(tmp_path, "scaling.csv").columns) == older
    assert load_csv(tmp_path, "scaling.csv") is None and read_text(tmp_path, "decode.csv") is None
    (tmp_path / "scaling.csv").write_text("model,seq_len,kernel_N,status\ngss,1024,64,ok\n")
    text = read_text(tmp_path, "scaling.csv")
    assert text.attrs["older"] and text.times_ms.tolist() == text.gauge_times_ms.tolist() == text.floor_ms.tolist() == [
        ""
    ]
    assert text.seq_len.tolist() == ["1024"]
    numbers = with_numbers(text)
    assert numbers.seq_len.tolist() == [1024] and numbers.kernel_N.tolist() == ["64"]  # an option stays text


@pytest.mark.parametrize(
    "conv_kernel, seq_len, full",
    [(64, 64, True), ("64", 64, True), ("64", "64", True), (32, 64, False), ("", 64, False), (None, 64, False)],
)
def test_full_taps_is_one_rule_for_numbers_and_csv_text(conv_kernel, seq_len, full):
    assert schema.full_taps(conv_kernel, seq_len) is full
    rows = pd.DataFrame({"conv_kernel": [conv_kernel], "seq_len": [seq_len]})
    assert analysis.full_taps(rows).tolist() == [full]
