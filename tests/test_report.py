"""REPORT.md: findings computed from fixture CSVs with known answers, sections per CSV, relative figure links."""

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.results import REPO_ROOT

FIXTURE = Path(__file__).parent / "fixtures" / "run"
KEY_BLIND = ("floor_accuracy", "ceiling_accuracy", "key_collision_rate")  # recall.csv's columns since issue 28


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("report") / "fixture"
    shutil.copytree(FIXTURE, run_dir)
    return report.write_report(run_dir, plots_dir=run_dir / "no-plots").read_text()


@pytest.mark.parametrize(
    "expected",
    [
        # gss = 2 L and attention = L^2 / 1000 (fwdbwd), L and L^2 / 4000 (fwd): equal at 2000 and 4000
        "| fwdbwd | float32 | gss faster than attention above seq_len ≈ 2,000 |",
        "| fwd | float32 | gss faster than attention above seq_len ≈ 4,000 |",
        "| gss | 1.00 (2,048..16,384) | 1.00 (2,048..16,384) |",
        "| attention | 2.00 (2,048..8,192) | 2.00 (2,048..8,192) |",
        "| gss-direct | 1.50 (512..2,048) | 1.50 (512..2,048) |",
        "- fwdbwd float32: fitted exponents gss 1.00, gss-direct 1.50, conv 1.00, attention 2.00",
        "- fwdbwd float32, seq_len 2,048: fastest conv (3,072.0 ms)",
        # attention's oom and conv's predicted-memory skip failed there; gss-direct's grid stops before it
        "- fwdbwd float32, seq_len 16,384: fastest gss (32,768.0 ms); conv, attention did not reach it; gss-direct not "
        "measured at it",
        "| gss | fwdbwd | float32 | 1,024 | true | 724.1 | 1,448.2 | 2,048.0 | 2,896.3 | 4.00× |",
        "| gss-direct | fwd | float32 | 2,048 | 129.3 | 341.3 | 900.8 | 2,377.2 | 3,861.8 | 29.86× |",
        # bits/byte, test rows of the selected rate, means with Student's t intervals over the seeds: two seeds a and
        # b give mean ± t(0.975, 1) |a - b| / 2, t(0.975, 1) = 12.706. attention on stdlib 2.30, 2.34 -> 2.320 ± 0.254;
        # gss N=16: true = 2.0 + 0.02 seed, false = 2.1 + 0.04 seed -> deltas -0.10, -0.12: -0.110 ± 0.127
        "- lowest mean bits/byte on stdlib: attention 2.320 (2.066..2.574) (2 seeds, lr 0.002)",
        "| synthetic | gss | 16 | 2.010 (1.883..2.137) | 2.120 (1.866..2.374) | -0.110 (-0.237..0.017) | 2 |",
        "- lambda_imag_exp on synthetic, gss kernel_N=64: Δ bits/byte (true − false) -0.110 (-0.237..+0.017) over 2 "
        "seeds",
        # four trainings pooled over lambda_imag_exp: t(0.975, 3) = 3.182
        "| synthetic | gss | 64 | 2.015 (1.910..2.120) | 4 |",
        "| stdlib | attention | 2.320 (2.066..2.574) | 2.470 (2.216..2.724) | 2.920 (2.666..3.174) | +0.600 |",
        # the window floor (planted 1.7 at 1x, 1.5 from 2x) beside the entropy floor (1.5)
        "| synthetic | gss N=64 λexp=true | 0.006 | 1.960 (1.833..2.087) | 2 | 1.700 | +0.260 | 1.500 | +0.460 |",
        "| stdlib | gss | 0.006 | 2.410 (2.283..2.537) | 2 |  |  |  |  |",
        "- lowest mean bits/byte on synthetic: attention 1.800 (1 seed, lr 0.002); +0.100 above the window floor 1.700 "
        "(the optimum for these windows, knowing the phase), +0.300 above the entropy floor 1.500",
        # ranked only where the paired difference's interval excludes 0: gss - conv is -0.10 in both seeds, conv -
        # attention 0.19 ± 0.127, gss - attention 0.09 ± 0.127
        "- bits/byte ranking on stdlib at seq_len 256 (lower first; separated where the paired difference's 95% "
        "interval excludes 0): attention 2.320 (2.066..2.574), gss 2.410 (2.283..2.537), conv 2.510 (2.383..2.637); "
        "separated: attention < conv; gss < conv; not separated: attention ≈ gss",
        # the GSS paper's section: the same means and intervals
        "| stdlib | attention | 2.320 (2.066..2.574) | 2 | 0.002 |",
        "| synthetic | window floor | 1.700 | 1.500 | 1.500 | -0.200 |",
        "- length generalisation on synthetic, gss N=16 λexp=true: bits/byte 2.010 at 1× -> 2.210 at 4× (window floor "
        "1.700 -> 1.500)",
        # the selected rates: the middle of the grid unflagged, an edge flagged, a single rate not selected
        "| stdlib | gss | 0.002, 0.006, 0.012 | 0.006 | 2.450 |  |",
        "| stdlib | conv | 0.002, 0.006, 0.012 | 0.012 | 2.520 | the largest rate tried: the grid may not bracket the "
        "optimum |",
        "| synthetic | gss N=16 λexp=false | 0.002, 0.006, 0.012 | 0.002 | 2.130 | the smallest rate "
        "tried: the grid may "
        "not bracket the optimum |",
        "| synthetic | attention | 0.002 | 0.002 |  | one rate: nothing selected |",
        "- learning rate selected on stdlib: gss 0.006, conv 0.012 (the largest rate tried: the grid "
        "may not bracket the "
        "optimum), attention 0.002 (the smallest rate tried: the grid may not bracket the optimum)",
        # recall: the selected rate's test accuracy (the other rates' left out), its interval clipped to [0, 1], beside
        # the floor (1 / 256 value tokens) and the key-blind ceiling recall.csv records; gss at 64: 0.90, 0.86 ->
        # 0.880 ± 0.254; conv at 256: 0.07, 0.06 -> 0.065 ± 0.064, which holds the ceiling 0.083
        "| gss | seq_len 64, 4 pairs, dim 64, vocab 512 | 0.003906 | 0.291 | 0.880 (0.626..1.000) | 2 | above the "
        "key-blind ceiling | 0.006 | 0.002, 0.006, 0.012 |  |",
        "| conv | seq_len 256, 16 pairs, dim 64, vocab 512 | 0.003906 | 0.083 | 0.065 (0.001..0.129) | 2 | not "
        "separated from the key-blind ceiling | 0.002 | 0.002, 0.006, 0.012 | the smallest rate tried: the grid may "
        "not bracket the optimum |",
        "- recall at seq_len 256, 16 pairs, dim 64, vocab 512 (floor 0.003906, key-blind ceiling 0.083, 8.6% of keys "
        "repeated as filler), best first (separated where the 95% intervals do not overlap): attention 0.940 "
        "(0.813..1.000), gss 0.680 (0.426..0.934), conv 0.065 (0.001..0.129); separated: attention > conv; gss > "
        "conv; not separated: attention ≈ gss",
        "- recall learning rate, gss: 0.006 at every cell",
        "- recall learning rate, conv: 0.012 (the largest rate tried: the grid may not bracket the optimum) at seq_len "
        "64, 4 pairs, dim 64, vocab 512, 0.002 (the smallest rate tried: the grid may not bracket the optimum) at "
        "seq_len 256, 16 pairs, dim 64, vocab 512",
        "- decode gss: recurrent 25.6× faster per token than reforward at prompt_len 2,048",
        "- decode attention: kv_cache 13.4× faster per token than reforward at prompt_len 2,048",
        "| gss | recurrent | float32 | 2,048 | 1.000 | 25.600 | 25.6× |",
        "- numerics bfloat16: worst out_rel_err 1.20e-02 (attention, seq_len 4,096)",
        "| gss | fwd | 2,048 | 341.5 | 33% | 18% | 42% | 4% | 2% |  |  |  |",
        "| git commit | 6f9e9f48cd76 (dirty) |",
        "| torch | 2.13.0+cpu |",
        "python run_all.py --out results/fixture",
        "python -m bench.scaling --out results/fixture --device cpu",
    ],
)
def test_findings_are_the_known_numbers(text, expected):
    assert expected in text.splitlines()


def test_the_window_floor_is_the_optimum_only_knowing_the_phase(text):
    # log2(129) / 256 = 0.0274: what knowing the phase of the synthetic source's 129-byte blocks is worth
    assert "at most log2(129)/T bits per byte (0.027 at T = 256)" in text
    assert "predates" not in text and "the same target bytes at every multiple, only the context grows" in text


def older(run_dir):
    """The fixture as the protocol before learning-rate selection wrote it: test rows, no split, lr_selected,
    window_floor_bpb, chance_accuracy, val_accuracy, floor_accuracy, ceiling_accuracy or key_collision_rate
    columns."""
    shutil.copytree(FIXTURE, run_dir)
    for name, columns in (
        ("perplexity.csv", ("split", "lr_selected", "window_floor_bpb")),
        ("recall.csv", ("lr_selected", "chance_accuracy", "val_accuracy", *KEY_BLIND)),
    ):
        with open(run_dir / name, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("split", "test") == "test" and r["lr_selected"] != "false"]
        with open(run_dir / name, "w", newline="") as f:
            writer = csv.DictWriter(f, [c for c in rows[0] if c not in columns], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return run_dir


def test_an_older_run_is_read_as_test_rows_of_one_rate_and_says_so(tmp_path):
    lines = report.write_report(older(tmp_path / "run"), plots_dir=tmp_path / "none").read_text().splitlines()
    assert "- lowest mean bits/byte on stdlib: attention 2.320 (2.066..2.574) (2 seeds, lr 0.002)" in lines
    assert "| stdlib | conv | 0.012 | 0.012 |  | one rate: nothing selected |" in lines
    assert sum("predates learning-rate selection" in line for line in lines) == 2  # perplexity.csv, recall.csv
    assert any("and the key-blind floor and ceiling" in line for line in lines)  # recall.csv: 1 / pairs is neither
    assert (
        "| gss | seq_len 64, 4 pairs, dim 64, vocab 512 |  |  | 0.880 (0.626..1.000) | 2 | ceiling not recorded | "
        "0.006 | 0.006 | one rate: nothing selected |" in lines
    )
    assert not any("may not bracket" in line for line in lines)


def test_failed_cells_are_listed(text):
    failed = text.split("## Failed cells")[1].split("##")[0]
    assert "| scaling.csv | attention | fwdbwd | float32 | 16,384 |  | oom | CUDA out of memory." in failed
    assert "| skipped | predicted peak 31.2 GiB exceeds 80% of free memory |" in failed
    assert "| error | process died in this cell |" in failed
    assert "| perplexity.csv | conv |" in failed and "| recall.csv | attention |" in failed
    assert failed.count("\n| ") == 2 + 9  # header, rule and the 9 rows whose status is not ok


def test_sections_only_for_csvs_present(tmp_path):
    shutil.copy(FIXTURE / "scaling.csv", tmp_path / "scaling.csv")
    out = report.write_report(tmp_path, plots_dir=tmp_path / "none").read_text()
    headings = re.findall(r"^## (.+)$", out, re.M)
    assert headings == ["Findings", "Environment", "Scaling", "Failed cells", "Reproduce"]
    assert "No env.json" in out and "![" not in out


def fake_figures(plots_dir):
    plots_dir.mkdir(parents=True)
    for name in ("time_fwd_float32.png", "lm_bits_per_byte.png", "decode.png", "unrelated.txt"):
        (plots_dir / name).write_bytes(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("run", ["abc", "baselines/cpu-quick"])
def test_default_plots_dir_mirrors_results_and_links_are_relative(tmp_path, monkeypatch, run):
    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path / "results")
    run_dir = tmp_path / "results" / run
    shutil.copytree(FIXTURE, run_dir)
    assert report.default_plots_dir(run_dir) == tmp_path / "plots" / run
    fake_figures(tmp_path / "plots" / run)
    text = report.write_report(run_dir).read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    up = "../" * (len(Path(run).parts) + 1)
    assert links == [
        f"{up}plots/{run}/time_fwd_float32.png",
        f"{up}plots/{run}/lm_bits_per_byte.png",
        f"{up}plots/{run}/decode.png",
    ]
    assert all((run_dir / link).resolve().is_file() for link in links)


def test_a_report_dir_gets_the_report_linked_from_there_and_the_run_dir_nothing(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "elsewhere" / "figs"
    shutil.copytree(FIXTURE, run_dir)
    fake_figures(out)
    path = report.write_report(run_dir, plots_dir=out, report_dir=out)
    assert path == out / "REPORT.md" and not (run_dir / "REPORT.md").exists()
    text = path.read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert links == ["time_fwd_float32.png", "lm_bits_per_byte.png", "decode.png"]
    assert f"python -m bench.plots {run_dir} --out {out}" in text.splitlines()


def test_a_run_dir_outside_results_gets_plots_by_its_name(tmp_path):
    assert report.default_plots_dir(tmp_path / "x" / "run7") == REPO_ROOT / "plots" / "run7"


def test_a_tie_names_every_model_and_tied_sweeps_each_get_a_crossover(tmp_path):
    from tests.test_analysis import LENGTHS, write_fixture

    write_fixture(
        tmp_path,
        {
            ("gss", "fwd", "512"): {L: 2.0 * L for L in LENGTHS},
            ("gss", "fwd", "64"): {L: 1.0 * L for L in LENGTHS},
            ("conv", "fwd"): {L: 1.0 * L for L in LENGTHS},
            ("attention", "fwd"): {L: L * L / 1000 for L in LENGTHS},
        },
    )
    text = report.write_report(tmp_path, plots_dir=tmp_path / "no-plots").read_text()
    assert "| fwd | float32 | gss kernel_N=512 faster than attention above seq_len ≈ 2,000 |" in text
    assert "| fwd | float32 | gss kernel_N=64 faster than attention above seq_len ≈ 1,000 |" in text
    assert "- fwd float32, seq_len 8,192: fastest gss kernel_N=64, conv (8,192.0 ms)" in text
    assert (
        "- fwd float32, seq_len 8,192: lowest memory gss kernel_N=512, gss kernel_N=64, conv, attention (1.0 MiB)"
        in text
    )


def test_shell_command_unquotes_the_module_invocation():
    command = "'python -m bench.scaling' --out '/tmp/a b'"
    assert report.shell_command(command) == "python -m bench.scaling --out '/tmp/a b'"


def test_cli_on_a_missing_run_dir_exits_2_with_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bench.report", str(tmp_path / "nope")], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: ")


def test_report_does_not_import_matplotlib():
    code = "import bench.report, sys; assert 'matplotlib' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_a_model_measured_in_one_mode_only_keeps_the_time_tables_columns_aligned(tmp_path):
    """The time and memory tables hold every mode's sweeps: a model measured forward only (as the quick preset's
    gss-direct) has its own column, empty in the fwdbwd rows, and no row has more cells than the header."""
    run_dir = tmp_path / "fixture"
    shutil.copytree(FIXTURE, run_dir)
    with open(run_dir / "scaling.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if not (r["model"] == "gss-direct" and r["mode"] == "fwdbwd")]
    with open(run_dir / "scaling.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    text = report.write_report(run_dir, plots_dir=run_dir / "no-plots").read_text()
    for title in ("Median time per step (ms)", "Peak memory (MiB)"):
        table = text[text.index(title) :].split("\n\n")[1].splitlines()
        header, body = table[0].split(" | "), [line.split(" | ") for line in table[2:]]
        assert "gss-direct" in header and all(len(cells) == len(header) for cells in body), table
        column = header.index("gss-direct")
        modes = [(cells[0].strip("| "), cells[column]) for cells in body]
        assert all(v == "" for m, v in modes if m == "fwdbwd") and any(v for m, v in modes if m == "fwd"), table
