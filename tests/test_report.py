"""REPORT.md: findings computed from fixture CSVs with known answers, sections per CSV, relative figure links."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.results import REPO_ROOT

FIXTURE = Path(__file__).parent / "fixtures" / "run"


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("report") / "fixture"
    shutil.copytree(FIXTURE, run_dir)
    return report.write_report(run_dir, plots_dir=run_dir / "no-plots").read_text()


@pytest.mark.parametrize("expected", [
    # gss = 2 L and attention = L^2 / 1000 (fwdbwd), L and L^2 / 4000 (fwd): equal at 2000 and 4000
    "| fwdbwd | float32 | gss faster than attention above seq_len ≈ 2,000 |",
    "| fwd | float32 | gss faster than attention above seq_len ≈ 4,000 |",
    "| gss | 1.00 (2,048..16,384) | 1.00 (2,048..16,384) |",
    "| attention | 2.00 (2,048..8,192) | 2.00 (2,048..8,192) |",
    "| gss-direct | 1.50 (1,024..2,048) | 1.50 (1,024..2,048) |",
    "- fwdbwd float32: fitted exponents gss 1.00, gss-direct 1.50, conv 1.00, attention 2.00",
    "- fwdbwd float32, seq_len 2,048: fastest conv (3,072.0 ms)",
    "- fwdbwd float32, seq_len 16,384: fastest gss (32,768.0 ms); gss-direct, conv, attention did not reach it",
    "| gss | fwdbwd | float32 | 1,024 | true | 724.1 | 1,448.2 | 2,048.0 | 2,896.3 | 4.00× |",
    "| gss-direct | fwd | float32 | 2,048 | 129.3 | 341.3 | 900.8 | 2,377.2 | 3,861.8 | 29.86× |",
    # bits/byte: true = 2.0 + 0.02 seed, false = 2.1 + 0.04 seed -> delta -0.10, -0.12
    "- best bits/byte on stdlib: attention 2.320 ± 0.028 (2 seeds)",
    "| synthetic | gss | 16 | 2.010 ± 0.014 | 2.120 ± 0.028 | -0.110 ± 0.014 | 2 |",
    "- lambda_imag_exp on synthetic, gss kernel_N=64: Δ bits/byte (true − false) -0.110 ± 0.014 over 2 seeds",
    "| synthetic | gss N=64 λexp=true | 1.960 ± 0.014 | 2 | 1.500 |",
    "| synthetic | gss | 64 | 2.015 ± 0.066 | 4 |",
    "| stdlib | attention | 2.320 ± 0.028 | 2.470 ± 0.028 | 2.920 ± 0.028 | +0.600 |",
    "- recall accuracy at seq_len 256: gss 0.70, conv 0.20, attention 0.95",
    "- decode gss: recurrent 25.6× faster per token than reforward at prompt_len 2,048",
    "- decode attention: kv_cache 13.4× faster per token than reforward at prompt_len 2,048",
    "| gss | recurrent | float32 | 2,048 | 1.000 | 25.600 | 25.6× |",
    "- numerics bfloat16: worst out_rel_err 1.20e-02 (attention, seq_len 4,096)",
    "| gss | fwd | 2,048 | 341.5 | 33% | 18% | 42% | 4% | 2% |  |  |  |",
    "| gss | 0.90 | 0.70 |",  # one seed: no ± 0.00
    "| git commit | 6f9e9f48cd76 (dirty) |",
    "| torch | 2.13.0+cpu |",
    "python run_all.py --out results/fixture",
    "python -m bench.scaling --out results/fixture --device cpu",
])
def test_findings_are_the_known_numbers(text, expected):
    assert expected in text.splitlines()


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
    assert links == [f"{up}plots/{run}/time_fwd_float32.png", f"{up}plots/{run}/lm_bits_per_byte.png",
                     f"{up}plots/{run}/decode.png"]
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
    write_fixture(tmp_path, {("gss", "fwd", "512"): {L: 2.0 * L for L in LENGTHS},
                             ("gss", "fwd", "64"): {L: 1.0 * L for L in LENGTHS},
                             ("conv", "fwd"): {L: 1.0 * L for L in LENGTHS},
                             ("attention", "fwd"): {L: L * L / 1000 for L in LENGTHS}})
    text = report.write_report(tmp_path, plots_dir=tmp_path / "no-plots").read_text()
    assert "| fwd | float32 | gss kernel_N=512 faster than attention above seq_len ≈ 2,000 |" in text
    assert "| fwd | float32 | gss kernel_N=64 faster than attention above seq_len ≈ 1,000 |" in text
    assert "- fwd float32, seq_len 8,192: fastest gss kernel_N=64, conv (8,192.0 ms)" in text
    assert "- fwd float32, seq_len 8,192: lowest memory gss kernel_N=512, gss kernel_N=64, conv, attention (1.0 MiB)" in text


def test_shell_command_unquotes_the_module_invocation():
    command = "'python -m bench.scaling' --out '/tmp/a b'"
    assert report.shell_command(command) == "python -m bench.scaling --out '/tmp/a b'"


def test_cli_on_a_missing_run_dir_exits_2_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.report", str(tmp_path / "nope")], cwd=REPO_ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: ")


def test_report_does_not_import_matplotlib():
    code = "import bench.report, sys; assert 'matplotlib' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
