"""Summaries of trained models, profiles, decoding and numerics from a run's CSVs (pandas, no torch):
labels, seed statistics, ablation deltas, op shares, speed-ups, worst errors. Shared by the plots and
the report; the scaling findings are in bench.analysis, the CSVs' columns in bench.schema."""

import pandas as pd

from bench.analysis import ok
from bench.schema import OPTIONS, TABLES

# ---- training runs: labels, seed statistics, ablation deltas

SHORT = {"kernel_N": "N={}", "kernel_H": "H={}", "lambda_imag_exp": "λexp={}", "conv_kernel": "taps={}"}


def with_labels(df):
    """Adds corpus ("" when absent) and label: the model plus the options that vary among its rows."""
    df = df.assign(corpus=df["corpus"] if "corpus" in df.columns else "")
    labels = df.model.astype(str)
    for _, rows in df.groupby(["corpus", "model"], sort=False):
        varying = [c for c in OPTIONS if c in rows.columns and rows[c].nunique() > 1]
        for c in varying:
            labels[rows.index] = labels[rows.index] + " " + rows[c].map(SHORT[c].format)
    return df.assign(label=labels)


def seed_stats(df, value, by):
    """Mean, std (0 for a single seed) and count of `value` over the rows of each group."""
    out = df.groupby(list(by), sort=False)[value].agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def _lm(ppl):
    return ok(with_labels(ppl))


def bpb_table(ppl):
    """bits/byte at the training length, mean ± std over seeds per (corpus, label), with the corpus's floor."""
    rows = _lm(ppl)
    rows = rows[rows.eval_seq_len == rows.train_seq_len]
    out = seed_stats(rows, "bits_per_byte", ["corpus", "label", "model"])
    floors = rows.groupby("corpus").entropy_floor_bpb.max() if "entropy_floor_bpb" in rows else pd.Series()
    return out.assign(floor=out.corpus.map(floors))


def lambda_deltas(ppl):
    """Paired (same model, options, seed) bits/byte at the training length with lambda_imag_exp true and false:
    means, stds and the mean ± std over seeds of the difference true - false."""
    rows = _lm(ppl)
    if "lambda_imag_exp" not in rows.columns:
        return pd.DataFrame()
    rows = rows[(rows.eval_seq_len == rows.train_seq_len) & rows.lambda_imag_exp.isin(["true", "false"])]
    config = ["corpus", "model"] + [c for c in OPTIONS if c != "lambda_imag_exp" and c in rows.columns]
    if rows.empty:
        return pd.DataFrame()
    wide = rows.pivot_table(index=config + ["seed"], columns="lambda_imag_exp", values="bits_per_byte")
    wide = wide.reindex(columns=["true", "false"]).dropna().reset_index()
    if wide.empty:
        return pd.DataFrame()
    wide["delta"] = wide["true"] - wide["false"]
    out = wide.groupby(config, sort=False).agg(true_mean=("true", "mean"), true_std=("true", "std"),
                                               false_mean=("false", "mean"), false_std=("false", "std"),
                                               delta_mean=("delta", "mean"), delta_std=("delta", "std"),
                                               n=("delta", "count")).reset_index().fillna(0.0)
    return out.assign(_n=pd.to_numeric(out.kernel_N, errors="coerce")).sort_values(["corpus", "model", "_n"])


def kernel_n_bpb(ppl):
    """bits/byte at the training length per (corpus, model, kernel_N), pooled over the other options and seeds;
    only where a model was trained with more than one kernel_N."""
    rows = _lm(ppl)
    if "kernel_N" not in rows.columns:
        return pd.DataFrame()
    rows = rows[(rows.eval_seq_len == rows.train_seq_len) & (rows.kernel_N != "")]
    rows = rows[rows.groupby(["corpus", "model"]).kernel_N.transform("nunique") > 1]
    out = seed_stats(rows, "bits_per_byte", ["corpus", "model", "kernel_N"])
    return out.assign(_n=pd.to_numeric(out.kernel_N)).sort_values(["corpus", "model", "_n"])


def length_generalisation(ppl):
    """bits/byte per (corpus, label) and eval/train length ratio, mean ± std over seeds."""
    rows = _lm(ppl)
    rows = rows.assign(ratio=rows.eval_seq_len / rows.train_seq_len)
    return seed_stats(rows, "bits_per_byte", ["corpus", "label", "model", "ratio"]).sort_values(["corpus", "ratio"])


def curve_stats(curve):
    """Training loss per (corpus, label, step), mean ± std over seeds."""
    return seed_stats(_lm(curve), "loss", ["corpus", "label", "model", "step"]).sort_values("step")


def recall_stats(recall):
    """Accuracy per (label, seq_len), mean ± std over seeds."""
    return seed_stats(_lm(recall), "accuracy", ["label", "model", "seq_len"]).sort_values("seq_len")


# ---- op breakdown, decode, numerics, failures

def op_shares(ops):
    """Time per (model, mode, seq_len) bar and category, with each category's share of the bar."""
    ops = ok(ops)
    ops = ops[ops.category != ""]
    value = "time_ms" if "time_ms" in ops.columns and ops.time_ms.notna().any() else "fraction"
    out = ops.groupby(["model", "mode", "seq_len", "category"], sort=False)[value].sum().reset_index()
    out = out.rename(columns={value: "time_ms"} if value == "time_ms" else {value: "share"})
    if value == "time_ms":
        out["share"] = out.time_ms / out.groupby(["model", "mode", "seq_len"]).time_ms.transform("sum")
    return out


def decode_speedup(decode):
    """Per model, stepping method (recurrent state, or attention's kv_cache) and prompt length: time per token
    of reforward over the stepping method, i.e. how much faster carrying a state is than re-running the prefix."""
    rows = ok(decode)
    # a decode cell without its method: the rows whose methods are compared
    keys = [c for c in TABLES["decode.csv"].cell if c != "method" and c in rows.columns and rows[c].notna().all()]
    wide = rows.pivot_table(index=keys, columns="method", values="time_per_token_ms").reset_index()
    parts = []
    for method in ("recurrent", "kv_cache"):
        if {method, "reforward"} <= set(wide.columns):
            part = wide.dropna(subset=[method, "reforward"])
            parts += [part.assign(method=method, step_ms=part[method])] if len(part) else []
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts)[keys + ["method", "step_ms", "reforward"]]
    return out.assign(speedup=out.reforward / out.step_ms).reset_index(drop=True)


def numerics_worst(numerics):
    """Per dtype and error column: the worst relative error, with the model and length where it occurs."""
    out, rows = [], ok(numerics)
    for dtype, group in rows.groupby("dtype", sort=False):
        for column in ("out_rel_err", "grad_rel_err"):
            if column in group.columns and group[column].notna().any():
                worst = group.loc[group[column].idxmax()]
                out.append(dict(dtype=dtype, error=column, value=worst[column], model=worst.model,
                                seq_len=worst.seq_len))
    return pd.DataFrame(out)
