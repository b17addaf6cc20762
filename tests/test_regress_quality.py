"""The regression gate on trained models: bits/byte and recall accuracy on the selected rates' test rows, the
learning-rate selection's rows, and older baselines."""

from bench import regress
from bench.schema import TABLES
from tests.test_regress import write

PPL_COLUMNS, RECALL_COLUMNS = (TABLES[n].columns for n in ("perplexity.csv", "recall.csv"))


def ppl_rows(bpb, *, lr=0.006, split="test", seed=0, selected="true"):
    return [
        dict(
            run_id="r",
            model="gss",
            corpus="synthetic",
            corpus_sha256="ab",
            seed=seed,
            kernel_N=64,
            lambda_imag_exp="true",
            conv_kernel="",
            train_seq_len=256,
            eval_seq_len=256,
            steps=100,
            params=10,
            lr=lr,
            split=split,
            lr_selected=selected,
            bits_per_byte=bpb,
            status="ok",
            device="cpu",
        )
    ]


def recall_rows(accuracy, *, lr=0.006, seed=0, selected="true"):
    return [
        dict(
            run_id="r",
            model="gss",
            seq_len=64,
            num_kv_pairs=8,
            vocab=64,
            seed=seed,
            steps=100,
            params=10,
            lr=lr,
            accuracy=accuracy,
            lr_selected=selected,
            status="ok",
        )
    ]


def selection(selected, *, test_bpb=2.0, val=None):
    """perplexity.csv of one selection: a validation row per rate (val: rate -> bits/byte), the selected rate's
    test rows for seeds 0 and 1."""
    val = val or {0.002: 2.5, 0.006: 2.1, 0.012: 2.3}
    rows = [
        r for lr, bpb in val.items() for r in ppl_rows(bpb, lr=lr, split="val", selected=str(lr == selected).lower())
    ]
    return rows + [r for seed in (0, 1) for r in ppl_rows(test_bpb + seed / 100, lr=selected, seed=seed)]


def quality(tmp_path, name, base_rows, cur_rows, columns=None):
    columns = columns or (PPL_COLUMNS if name == "perplexity.csv" else RECALL_COLUMNS)
    base = write(tmp_path / "base", name, columns, base_rows)
    cur = write(tmp_path / "cur", name, PPL_COLUMNS if name == "perplexity.csv" else RECALL_COLUMNS, cur_rows)
    return regress.main(["--baseline", str(base), "--current", str(cur)])


def test_bits_per_byte_and_recall_accuracy_are_gated(tmp_path, capsys):
    for name, rows, good, same, bad in [
        ("perplexity.csv", ppl_rows, 2.0, 2.01, 2.2),
        ("recall.csv", recall_rows, 0.9, 0.88, 0.5),
    ]:
        assert quality(tmp_path / name / "same", name, rows(good), rows(same)) == 0
        assert quality(tmp_path / name / "bad", name, rows(good), rows(bad)) == 1
    assert "bits_per_byte 2 -> 2.2 (+10.0%)" in capsys.readouterr().out


def test_validation_rows_are_not_gated_on_bits_per_byte(tmp_path, capsys):
    worse_val = selection(0.006, val={0.002: 3.5, 0.006: 2.1, 0.012: 3.3})  # the unselected rates far worse
    assert quality(tmp_path / "a", "perplexity.csv", selection(0.006), worse_val) == 0
    assert "5 cells compared" in capsys.readouterr().out
    assert quality(tmp_path / "b", "perplexity.csv", selection(0.006), selection(0.006, test_bpb=2.1)) == 1
    out = capsys.readouterr().out
    assert out.count("regression") == 3 and "split=test" in out.splitlines()[0]  # two test rows and the summary


def test_a_selection_that_moved_is_one_sided_not_a_crash(tmp_path, capsys):
    assert quality(tmp_path / "ppl", "perplexity.csv", selection(0.006), selection(0.012, test_bpb=1.9)) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("only-baseline") and "lr=0.006 split=test" in line for line in out) == 2
    assert sum(line.startswith("only-current") and "lr=0.012 split=test" in line for line in out) == 2
    assert sum(line.startswith("note") and "the selection moved: lr_selected" in line for line in out) == 2
    base = recall_rows(0.9, lr=0.002, selected="false") + recall_rows(0.95) + recall_rows(0.93, seed=1)
    cur = recall_rows(0.5, lr=0.002) + recall_rows(0.3, selected="false") + recall_rows(0.52, lr=0.002, seed=1)
    assert quality(tmp_path / "recall", "recall.csv", base, cur) == 0  # the accuracies of rates not selected differ
    out = capsys.readouterr().out
    assert "the selection moved: lr_selected false -> true" in out and "only-current" in out and "only-baseline" in out


def test_a_failed_validation_training_is_a_regression(tmp_path, capsys):
    failed = [
        dict(r, status="error", bits_per_byte="", error="NaN loss") if r["split"] == "val" and r["lr"] == 0.002 else r
        for r in selection(0.006)
    ]
    assert quality(tmp_path, "perplexity.csv", selection(0.006), failed) == 1
    assert "status ok -> error: NaN loss" in capsys.readouterr().out.splitlines()[0]


def test_an_older_baseline_reads_as_test_rows_of_its_one_rate(tmp_path, capsys):
    older = [c for c in PPL_COLUMNS if c not in ("split", "lr_selected", "window_floor_bpb")]
    for name, current, code in (("same", 2.01, 0), ("worse", 2.2, 1)):
        base = write(tmp_path / name / "base", "perplexity.csv", older, ppl_rows(2.0))
        cur = write(tmp_path / name / "cur", "perplexity.csv", PPL_COLUMNS, ppl_rows(current))
        assert regress.main(["--baseline", str(base), "--current", str(cur)]) == code
    assert "1 cells compared" in capsys.readouterr().out
    base = write(
        tmp_path / "recall" / "base", "recall.csv", [c for c in RECALL_COLUMNS if c != "lr_selected"], recall_rows(0.9)
    )
    cur = write(tmp_path / "recall" / "cur", "recall.csv", RECALL_COLUMNS, recall_rows(0.5))
    assert regress.main(["--baseline", str(base), "--current", str(cur)]) == 1
