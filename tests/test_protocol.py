"""The fair-quality protocol of the perplexity suite: the learning rate each model selects on validation (planted
scores, no real training), disjoint train / validation / test splits, and the same target bytes at every
evaluation length (a fixed-context predictor scores identically at every k)."""

import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from bench import perplexity
from bench.perplexity import lm, mqar
from bench.perplexity.data import IGNORE, load_corpus
from bench.results import read_rows

TINY = [
    "--preset",
    "smoke",
    "--device",
    "cpu",
    "--task",
    "lm",
    "--models",
    "gss,conv",
    "--corpus",
    "synthetic",
    "--seq-len",
    "32",
    "--eval-lengths",
    "1,2",
    "--steps",
    "2",
]
PLANTED_BPB = {0.001: 3.0, 0.002: 2.5, 0.004: 2.5, 0.008: 2.9}  # a tie: the smaller rate wins


@pytest.fixture
def planted(monkeypatch):
    """Trainings that only record their rate; validation bits/byte planted per rate (gss) or the reverse (conv)."""
    trained = []

    def fit(cell, corpus, rate, device):
        trained.append((cell.model, cell.seed, rate))
        return SimpleNamespace(rate=rate, num_params=lambda: 1), SimpleNamespace(
            losses=(1.0,), train_loss=1.0, time_s=0.1
        )

    def evaluate(model, cell, corpus, split, multiple, device):
        bpb = PLANTED_BPB[model.rate] if cell.model == "gss" else 10 - PLANTED_BPB[model.rate]
        return dict(
            eval_seq_len=multiple * cell.seq_len,
            split=split,
            eval_loss=bpb * math.log(2),
            bits_per_byte=bpb,
            ppl=1.0,
            window_floor_bpb=None,
            params=1,
            status="ok",
        )

    monkeypatch.setattr(lm, "fit", fit)
    monkeypatch.setattr(lm, "evaluate", evaluate)
    return trained


def test_each_model_selects_the_rate_of_least_validation_bits_per_byte(tmp_path, planted):
    argv = [*TINY, "--lr", "8e-3,1e-3,4e-3,2e-3", "--seeds", "0,1", "--out", str(tmp_path)]
    assert perplexity.main(argv) == 0
    rows = read_rows(tmp_path / "perplexity.csv")
    val = [(r["model"], r["seed"], r["lr"], r["eval_seq_len"], r["lr_selected"]) for r in rows if r["split"] == "val"]
    assert val == [
        ("gss", "0", lr, "32", str(lr == "0.002").lower()) for lr in ("0.001", "0.002", "0.004", "0.008")
    ] + [("conv", "0", lr, "32", str(lr == "0.001").lower()) for lr in ("0.001", "0.002", "0.004", "0.008")]
    test = [(r["model"], r["seed"], r["lr"], r["eval_seq_len"], r["lr_selected"]) for r in rows if r["split"] == "test"]
    assert test == [
        (m, s, lr, L, "true") for m, lr in (("gss", "0.002"), ("conv", "0.001")) for s in "01" for L in ("32", "64")
    ]
    # the first seed's training at the chosen rate is reused: one training per rate, then one per other seed
    assert planted == [("gss", 0, r) for r in (1e-3, 2e-3, 4e-3, 8e-3)] + [("gss", 1, 2e-3)] + [
        ("conv", 0, r) for r in (1e-3, 2e-3, 4e-3, 8e-3)
    ] + [("conv", 1, 1e-3)]


def test_resume_trains_the_other_seeds_at_the_rate_read_back(tmp_path, planted):
    argv = [*TINY, "--models", "gss", "--lr", "1e-3,2e-3", "--out", str(tmp_path)]
    assert perplexity.main([*argv, "--seeds", "0"]) == 0
    assert perplexity.main([*argv, "--seeds", "0,1", "--resume"]) == 0
    assert planted[-1] == ("gss", 1, 2e-3) and len(planted) == 3


def test_a_shard_keeps_a_groups_seeds_together(capsys):
    listed = []
    for i in range(2):
        assert perplexity.main([*TINY, "--lr", "1e-3,2e-3", "--seeds", "0,1,2", "--shard", f"{i}/2", "--list"]) == 0
        listed.append(
            {
                (f.split("=")[1])
                for line in capsys.readouterr().out.splitlines()
                for f in line.split()
                if f.startswith("model=")
            }
        )
    assert listed == [{"gss"}, {"conv"}]


def test_with_one_rate_nothing_is_selected_and_only_test_rows_are_written(tmp_path, planted):
    assert perplexity.main([*TINY, "--lr", "2e-3", "--out", str(tmp_path)]) == 0
    rows = read_rows(tmp_path / "perplexity.csv")
    assert {(r["split"], r["lr_selected"], r["lr"]) for r in rows} == {("test", "true", "0.002")} and len(rows) == 4


def test_recall_selects_the_rate_of_best_validation_accuracy(tmp_path, monkeypatch):
    accuracy = {0.001: (0.3, 0.31), 0.002: (0.6, 0.5), 0.004: (0.6, 0.7)}  # (validation, test); a tie: smaller

    def train(model, next_batch, *, lr, **kwargs):
        model.rate = lr
        return SimpleNamespace(train_loss=1.0, time_s=0.1)

    monkeypatch.setattr(mqar, "train", train)
    monkeypatch.setattr(
        mqar,
        "recall_accuracy",
        lambda model, inputs, labels: accuracy[model.rate][
            0 if torch.equal(inputs, mqar.draw(CELL, mqar.VAL_SEED)[0]) else 1
        ],
    )
    rows = mqar.measure(CELL, torch.device("cpu"))
    assert [(r["lr"], r["val_accuracy"], r["accuracy"], r["lr_selected"]) for r in rows] == [
        (0.001, 0.3, 0.31, False),
        (0.002, 0.6, 0.5, True),
        (0.004, 0.6, 0.7, False),
    ]


CELL = SimpleNamespace(
    model="gss",
    seq_len=32,
    num_kv_pairs=4,
    vocab=64,
    seed=0,
    lrs=(0.001, 0.002, 0.004),
    batch=2,
    steps=1,
    dim=16,
    depth=1,
    dtype="float32",
    lr_extensions=2,  # a preset's grid: the best rate lies inside it (0.002 ties 0.004), so none is added
    layer_options=lambda: {"kernel_N": 8, "kernel_H": 16},
)


def test_train_validation_and_test_are_disjoint_consecutive_splits(synth, tmp_path):
    text = tmp_path / "t.txt"
    text.write_bytes(bytes(range(256)) * 40)
    for corpus in (synth, load_corpus(str(text))):
        parts = (corpus.train, corpus.valid, corpus.test)
        content = torch.cat(parts)
        assert len(corpus.valid) == len(corpus.test) == pytest.approx(0.1 * len(content), abs=130)
        assert sum(map(len, parts)) == len(content)
    assert torch.equal(torch.cat([synth.valid, synth.test])[: len(synth.valid)], synth.valid)
    assert synth.test.data_ptr() == synth.valid.data_ptr() + len(synth.valid)  # views, in order


def test_every_evaluation_length_scores_the_same_target_bytes(synth):
    targets = []
    for multiple in (1, 2, 4):
        ids, labels = synth.scored_windows("test", seq_len=64, count=12, multiple=multiple, max_multiple=4)
        assert ids.shape == labels.shape == (12, 64 * multiple)
        assert (labels[:, :-64] == IGNORE).all() and (labels[:, -64:] != IGNORE).all()
        assert torch.equal(ids[:, 1:], torch.where(labels[:, :-1] == IGNORE, ids[:, 1:], labels[:, :-1]))
        targets.append(labels[:, -64:])
    assert torch.equal(targets[0], targets[1]) and torch.equal(targets[0], targets[2])
    _, last = synth.scored_windows("test", seq_len=64, count=12, multiple=1, max_multiple=4)
    assert torch.equal(last[-1, -64:], synth.test[-64:].long())  # the last window ends at the split's end


def test_a_fixed_context_predictor_scores_the_same_at_every_length(synth):
    """An order-2 byte model (counts of byte pairs in the training split, add-one smoothed: the next byte given
    the last) cannot use longer context: on the same targets its bits/byte is identical at every k, as it would not
    be on different text."""
    train = synth.train.tolist()
    counts, context = Counter(zip(train, train[1:])), Counter(train)

    def bpb(ids, labels):
        bits, n = 0.0, 0
        for x, y in zip(ids.tolist(), labels.tolist()):
            for t in range(len(x)):
                if y[t] != IGNORE:
                    bits, n = bits - math.log2((counts[(x[t], y[t])] + 1) / (context[x[t]] + 256)), n + 1
        return bits / n

    scores = [bpb(*synth.scored_windows("test", seq_len=32, count=40, multiple=k, max_multiple=4)) for k in (1, 2, 4)]
    print(f"order-2 bits/byte at 1x, 2x, 4x: {scores}")
    assert scores[0] == scores[1] == scores[2] and 1.9 < scores[0] < 8
    shifted = bpb(*synth.scored_windows("test", seq_len=32, count=40, multiple=1, max_multiple=1))
    assert shifted != scores[0]  # other end offsets, other text: the score moves


def test_the_reports_phase_bound_uses_the_synthetic_sources_block_length():
    from bench.analysis import summaries
    from bench.perplexity.synthetic import Synthetic

    assert Synthetic().block_len == summaries.SYNTHETIC_BLOCK_LEN
    assert summaries.phase_bound_bpb(256) == pytest.approx(math.log2(Synthetic().block_len) / 256)
