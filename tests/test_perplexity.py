"""The perplexity and recall suites: honest losses against the entropy floor, determinism, rows, resume by every
setting, and bad input."""

import importlib
import math
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench import perplexity
from bench.perplexity import grid
from bench.perplexity.data import load_corpus
from bench.perplexity.synthetic import unigram_entropy_bpb
from bench.perplexity.training import lr_at
from bench.results import read_rows
from bench.schema import TABLES
from tests.helpers import assert_usage_error

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "smoke", "--device", "cpu"]
LEARN = [
    *TINY,
    "--task",
    "lm",
    "--models",
    "gss",
    "--corpus",
    "synthetic",
    "--seq-len",
    "64",
    "--steps",
    "120",
    "--dim",
    "32",
    "--depth",
    "1",
    "--kernel-n",
    "16",
    "--eval-lengths",
    "1,2",
    "--lr",
    "3e-3",
    "--batch",
    "8",
]


def test_a_trained_model_beats_the_unigram_entropy_and_stays_above_the_floor(tmp_path):
    assert perplexity.main([*LEARN, "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "perplexity.csv")
    corpus = load_corpus("synthetic")
    unigram = unigram_entropy_bpb(corpus.valid)
    assert [r["eval_seq_len"] for r in rows] == ["64", "128"]
    for row in rows:
        bpb, floor, window = (float(row[c]) for c in ("bits_per_byte", "entropy_floor_bpb", "window_floor_bpb"))
        print(f"bits/byte {bpb:.3f}, window floor {window:.3f}, entropy rate {floor:.3f}, unigram {unigram:.3f}")
        assert row["status"] == "ok" and (row["split"], row["lr_selected"], row["lr"]) == ("test", "true", "0.003")
        assert floor == pytest.approx(corpus.entropy_floor_bpb, rel=1e-5)
        assert floor <= window < bpb < unigram  # below the window's floor would mean the model sees the future
        assert bpb == pytest.approx(float(row["eval_loss"]) / math.log(2), rel=1e-5)
        assert float(row["ppl"]) == pytest.approx(math.exp(float(row["eval_loss"])), rel=1e-5)
        assert int(row["tokens"]) == 120 * 8 * 64 and row["corpus_sha256"] == corpus.sha256
    curve = read_rows(tmp_path / "train_curve.csv")
    assert [int(r["step"]) for r in curve] == list(range(1, 121))
    assert float(curve[-1]["loss"]) < float(curve[0]["loss"]) - 1.0


def test_the_same_seed_gives_identical_losses(tmp_path):
    args = [*LEARN, "--steps", "15"]
    assert perplexity.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert perplexity.main([*args, "--out", str(tmp_path / "b")]) == 0
    assert perplexity.main([*args, "--seeds", "1", "--out", str(tmp_path / "c")]) == 0
    losses = {
        run: [(r["train_loss"], r["eval_loss"]) for r in read_rows(tmp_path / run / "perplexity.csv")] for run in "abc"
    }
    assert losses["a"] == losses["b"] and losses["a"] != losses["c"]
    assert read_rows(tmp_path / "a" / "train_curve.csv") != []


def test_ablation_in_one_command_and_real_corpora_have_no_floor(tmp_path):
    text = tmp_path / "text.txt"
    text.write_bytes(bytes(range(32, 127)) * 200)
    assert (
        perplexity.main(
            [
                *TINY,
                "--task",
                "lm",
                "--models",
                "gss,attention",
                "--corpus",
                str(text),
                "--seq-len",
                "32",
                "--steps",
                "2",
                "--kernel-n",
                "4,8",
                "--lambda-imag-exp",
                "true,false",
                "--seeds",
                "0,1",
                "--eval-lengths",
                "1",
                "--lr",
                "2e-3",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    rows = read_rows(tmp_path / "run" / "perplexity.csv")
    gss = {(r["kernel_N"], r["lambda_imag_exp"], r["seed"]) for r in rows if r["model"] == "gss"}
    assert len(gss) == 8 and len([r for r in rows if r["model"] == "attention"]) == 2
    assert {r["entropy_floor_bpb"] for r in rows} == {r["window_floor_bpb"] for r in rows} == {""}
    assert {r["status"] for r in rows} == {"ok"}


def test_recall_rows_with_the_vocabulary_rule_and_chance(tmp_path):
    assert perplexity.main([*TINY, "--task", "recall", "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "recall.csv")  # smoke: length 32, no vocabulary above it -> the next power of two
    assert [
        (r["model"], r["seq_len"], r["num_kv_pairs"], r["vocab"], r["chance_accuracy"], r["lr_selected"]) for r in rows
    ] == [("gss", "32", "4", "64", "0.25", "true"), ("attention", "32", "4", "64", "0.25", "true")]
    assert (
        perplexity.main(
            [
                *TINY,
                "--task",
                "recall",
                "--vocab",
                "33",
                "--num-kv-pairs",
                "2",
                "--models",
                "gss",
                "--out",
                str(tmp_path / "b"),
            ]
        )
        == 0
    )
    assert [(r["vocab"], r["chance_accuracy"]) for r in read_rows(tmp_path / "b" / "recall.csv")] == [("33", "0.5")]
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 and r["status"] == "ok" for r in rows)
    assert not (tmp_path / "perplexity.csv").exists() or read_rows(tmp_path / "perplexity.csv") == []


def test_list_prints_every_training_and_resume_tells_trainings_apart_by_every_setting(tmp_path, capsys):
    assert perplexity.main([*TINY, "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert any("task=lm" in line and "eval_lengths=1,2" in line for line in listed)
    assert any("task=recall" in line and "eval_lengths=" in line for line in listed)
    recall = [*TINY, "--task", "recall", "--models", "gss", "--steps", "2", "--out", str(tmp_path)]
    assert perplexity.main([*recall, "--kernel-n", "8"]) == 0
    assert perplexity.main([*recall, "--kernel-n", "8,16", "--resume"]) == 0  # the kernel_N=16 training is new
    rows = read_rows(tmp_path / "recall.csv")
    assert [(r["kernel_N"], r["status"], r["batch"], r["dtype"]) for r in rows] == [
        ("8", "ok", "2", "float32"),
        ("16", "ok", "2", "float32"),
    ]


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    rates = [lr_at(s, steps=100, lr=1.0) for s in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert rates[10] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--corpus", "nosuch"], "unknown corpus"),
        (["--corpus", "{empty}"], "empty"),
        (["--corpus", "{missing}"], "does not exist"),
        (["--corpus", "{short}"], "too few for its train/validation/test split"),
        (["--task", "translate"], "unknown task 'translate'"),
        (["--models", "rnn"], "unknown model 'rnn'"),
        (["--seq-len", "0"], "--seq-len: 0 is not positive"),
        (["--seeds", "-1"], "--seeds: -1 is negative"),
        (["--lr", "fast"], "--lr: 'fast' is not a number"),
        (["--corpus", "synthetic", "--seq-len", "1000000", "--task", "lm"], "too few for seq_len 1000000"),
        (["--task", "recall", "--seq-len", "8"], "recall needs seq_len >= 4 * num_kv_pairs"),
        (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
        (["--lr", "1e-3,0"], "--lr must be a positive finite number, got 0"),
        (["--task", "recall", "--vocab", "32"], "recall needs vocab > seq_len"),
        (["--models", "conv", "--conv-kernel", "full"], "no requested model takes the options given"),
        (["--dtype", "float32,bfloat16"], "--dtype takes one dtype here"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "short.txt").write_bytes(b"x" * 100)
    argv = [
        a.format(empty=tmp_path / "empty.txt", missing=tmp_path / "missing.txt", short=tmp_path / "short.txt")
        for a in argv
    ]
    assert_usage_error(perplexity.main, [*TINY, *argv], tmp_path / "run", capsys, message)


def test_enwik8_offline_and_uncached_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GSS_BENCH_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert perplexity.main([*TINY, "--task", "lm", "--corpus", "enwik8", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "enwik8" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_chunked_models_attend_within_an_eighth_of_the_training_length_and_the_paper_models_are_trained():
    quick = [c for g in grid.PERPLEXITY_PRESETS["quick"].grids for c in g.cells()]
    zoology = {"gss", "conv", "attention", "dss"}  # Zoology's four: the quick preset's lm and recall models
    assert {c.model for c in quick if c.task == "lm"} == {c.model for c in quick if c.task == "recall"} == zoology
    cells = [c for g in grid.PERPLEXITY_PRESETS["full"].grids for c in g.cells()]
    paper = {"gss", "dss", "gss-hybrid", "attention", "attention-chunked"}
    assert paper <= {c.model for c in cells if c.task == "lm"}  # the full preset trains the paper's comparison
    chunks = {(c.model, c.seq_len): c.layer_options().get("chunk") for c in cells if c.task == "lm"}
    assert chunks[("attention-chunked", 4096)] == chunks[("gss-hybrid", 4096)] == 512  # the paper's 512 at 4,096
    assert chunks[("gss", 4096)] is None
    full = [c for c in cells if c.task == "recall"]
    assert {c.layer_options().get("chunk") for c in full if c.model == "gss-hybrid" and c.seq_len == 1024} == {128}
    hybrid = next(c for c in cells if c.model == "gss-hybrid" and c.task == "lm")
    assert hybrid.layer_options() == {"kernel_N": 512, "kernel_H": 256, "lambda_imag_exp": True, "chunk": 512}


@pytest.mark.parametrize("suite", ["bench.scaling", "bench.numerics", "bench.profiling"])
def test_the_layer_suites_refuse_the_lm_level_hybrid_with_one_line(tmp_path, capsys, suite):
    main = importlib.import_module(suite).main
    assert_usage_error(
        main,
        ["--preset", "smoke", "--device", "cpu", "--models", "gss-hybrid"],
        tmp_path / "run",
        capsys,
        "gss-hybrid is an LM-level model",
    )


def test_the_zoology_presets_sweep_width_length_and_pairs_and_full_holds_the_gpu_grid(capsys):
    def cells(preset):
        return [c for g in grid.PERPLEXITY_PRESETS[preset].grids for c in g.cells()]

    zoology, cpu, full = cells("zoology"), cells("zoology-cpu"), cells("full")
    points = {(c.dim, c.seq_len, c.num_kv_pairs) for c in zoology}
    assert points == {(d, L, p) for d in (64, 128, 256) for L in (64, 128, 256) for p in (4, 8, 16)}  # all fit
    assert {c.model for c in zoology} == {"attention", "gss", "conv", "dss"} and len(zoology) == 108
    assert {(c.depth, c.vocab, c.seed, c.selects, c.lr_extensions) for c in zoology} == {(2, 8192, 0, True, 2)}
    assert {c.batch * c.seq_len for c in zoology} == {8192}  # fewer sequences at longer lengths, as Zoology
    assert {(c.dim, c.seq_len, c.num_kv_pairs) for c in cpu} == {(d, 64, p) for d in (32, 64, 128) for p in (4, 8)}
    assert len(cpu) == 24 and set(zoology) <= set(full)
    assert "dim" in TABLES["recall.csv"].key  # widths are distinct cells of recall.csv
    assert perplexity.main(["--preset", "zoology", "--list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 108


def test_the_quick_preset_trains_three_seeds_and_recall_at_zoologys_four_models():
    quick = [c for g in grid.PERPLEXITY_PRESETS["quick"].grids for c in g.cells()]
    for task in ("lm", "recall"):
        assert {c.seed for c in quick if c.task == task} == {0, 1, 2}
    recall = [c for c in quick if c.task == "recall"]
    assert {(c.seq_len, c.num_kv_pairs, c.vocab, c.batch, c.dim) for c in recall} == {(32, 4, 128, 32, 64)}
