"""Summaries of trained models, profiles, decoding and numerics from a run's CSVs (pandas, no torch):
labels, seed statistics, ablation deltas, op shares, speed-ups, worst errors. Shared by the plots and
the report; the scaling findings are in bench.analysis, the CSVs' columns in bench.schema."""

import math

import pandas as pd

from bench.analysis import ok
from bench.analysis.quality import RECALL_CELL, reported, seed_interval, with_labels
from bench.results import cell_key
from bench.schema import OPTIONS, SYNTHETIC_BLOCK_LEN, TABLES

# ---- training runs: labels, seed statistics, ablation deltas


def seed_stats(df, value, by, *, bounds=(-math.inf, math.inf)):
    """Mean, std (0 for a single seed), count, and the 95% interval of the mean (ci_low, ci_high:
    quality.seed_interval, Student's t over the seeds, within `bounds`; NaN for a single seed) of `value` over the
    rows of each group."""
    out = df.groupby(list(by), sort=False)[value].agg(mean="mean", std="std", n="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    intervals = [seed_interval(g, bounds=bounds)[1:3] for _, g in df.groupby(list(by), sort=False)[value]]
    return out.assign(ci_low=[i[0] for i in intervals] or math.nan, ci_high=[i[1] for i in intervals] or math.nan)


def _lm(df):
    return ok(with_labels(df))


def phase_bound_bpb(train_seq_len):
    """The most that knowing the phase is worth, bits per byte over T = train_seq_len scored bytes: window_floor_bpb
    is the floor of a predictor that knows a window's phase in the synthetic corpus's blocks (SYNTHETIC_BLOCK_LEN);
    a real one must infer it, which is worth at most log2(block length) bits over a window's T scored bytes."""
    return math.log2(SYNTHETIC_BLOCK_LEN) / train_seq_len


def rates(values):
    """Learning rates as text, ascending: "0.002, 0.006"."""
    return ", ".join(f"{v:g}" for v in sorted(set(values.dropna())))


def bpb_table(ppl):
    """Test bits/byte at the training length, mean ± std over seeds per (corpus, label), with the selected rate,
    the entropy floor (the source's infinite-context rate) and the window floor (the windows' optimum knowing the
    source's phase), and the gaps of the mean to each (NaN for real text)."""
    rows = reported(ppl)
    rows = rows[rows.eval_seq_len == rows.train_seq_len]
    by = ["corpus", "label", "model"]
    out = seed_stats(rows, "bits_per_byte", by)
    extra = rows.groupby(by, sort=False).agg(
        lr=("lr", rates),
        floor=("entropy_floor_bpb", "max"),
        window_floor=("window_floor_bpb", "max"),
        T=("train_seq_len", "max"),
    )
    out = out.merge(extra.reset_index(), on=by)
    return out.assign(gap=out["mean"] - out["floor"], window_gap=out["mean"] - out.window_floor)


def _selection(rows, candidates, by):
    """Per group of `by`: candidates (all rates tried), selected (ok rows with lr_selected true) and edge, true
    when a grid of several rates chose its smallest or largest: the grid may not bracket the optimum."""
    chosen = rows[rows.lr_selected == "true"].groupby(by, sort=False).lr.agg(lambda v: sorted(set(v)))
    tried = candidates.groupby(by, sort=False).lr.agg(lambda v: sorted(set(v.dropna())))
    out = pd.DataFrame({"selected": chosen}).join(tried.rename("candidates")).reset_index()
    out["candidates"] = [
        c if isinstance(c, list) and c else s for c, s in zip(out.candidates, out.selected, strict=True)
    ]
    out["edge"] = [
        len(c) > 1 and any(r in (c[0], c[-1]) for r in s) for c, s in zip(out.candidates, out.selected, strict=True)
    ]
    out["side"] = [
        ("smallest" if s[0] == c[0] else "largest") if e else ""
        for c, s, e in zip(out.candidates, out.selected, out.edge, strict=True)
    ]
    return out


def lr_selection(ppl):
    """Per (corpus, label): the rates tried on validation, the one selected and its validation bits/byte (NaN
    with a single rate: nothing was selected), and the edge flag (_selection)."""
    labelled = with_labels(ppl)
    val = labelled[labelled.split == "val"]
    by = ["corpus", "label", "model"]
    out = _selection(reported(ppl), val, by)
    best = ok(val)[ok(val).lr_selected == "true"].groupby(by, sort=False).bits_per_byte.min().rename("val_bpb")
    return out.merge(best.reset_index(), on=by, how="left")


def val_curves(ppl):
    """Validation bits/byte per (corpus, label, lr), with selected: the rate the selection chose."""
    val = _lm(ppl)
    val = val[val.split == "val"]
    out = seed_stats(val, "bits_per_byte", ["corpus", "label", "model", "lr"])
    chosen = val[val.lr_selected == "true"].groupby(["corpus", "label"]).lr.agg(set)
    return out.assign(selected=[r.lr in chosen.get((r.corpus, r.label), ()) for r in out.itertuples()])


def lambda_deltas(ppl):
    """Paired (same model, options, seed) test bits/byte at the training length with lambda_imag_exp true and
    false, each at its own selected rate: means, stds and 95% intervals over seeds of each and of the difference."""
    rows = reported(ppl)
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
    out = (
        wide.groupby(config, sort=False)
        .agg(
            true_mean=("true", "mean"),
            true_std=("true", "std"),
            false_mean=("false", "mean"),
            false_std=("false", "std"),
            delta_mean=("delta", "mean"),
            delta_std=("delta", "std"),
            n=("delta", "count"),
        )
        .reset_index()
        .fillna(0.0)
    )
    for column in ("true", "false", "delta"):  # 95% intervals over seeds (quality.seed_interval), NaN for one seed
        intervals = [seed_interval(g)[1:3] for _, g in wide.groupby(config, sort=False)[column]]
        out[f"{column}_low"], out[f"{column}_high"] = zip(*intervals, strict=True)
    return out.assign(_n=pd.to_numeric(out.kernel_N, errors="coerce")).sort_values(["corpus", "model", "_n"])


def kernel_n_bpb(ppl):
    """Test bits/byte at the training length per (corpus, model, kernel_N), pooled over the other options and
    seeds; only where a model was trained with more than one kernel_N."""
    rows = reported(ppl)
    if "kernel_N" not in rows.columns:
        return pd.DataFrame()
    rows = rows[(rows.eval_seq_len == rows.train_seq_len) & (rows.kernel_N != "")]
    rows = rows[rows.groupby(["corpus", "model"]).kernel_N.transform("nunique") > 1]
    out = seed_stats(rows, "bits_per_byte", ["corpus", "model", "kernel_N"])
    return out.assign(_n=pd.to_numeric(out.kernel_N)).sort_values(["corpus", "model", "_n"])


def length_generalisation(ppl):
    """Test bits/byte per (corpus, label) and eval/train length ratio, mean ± std over seeds (the same target
    bytes at every ratio), with the window floor at that ratio (NaN for real text)."""
    rows = reported(ppl)
    rows = rows.assign(ratio=rows.eval_seq_len / rows.train_seq_len)
    by = ["corpus", "label", "model", "ratio"]
    out = seed_stats(rows, "bits_per_byte", by)
    floors = rows.groupby(by, sort=False).window_floor_bpb.max().rename("window_floor").reset_index()
    return out.merge(floors, on=by).sort_values(["corpus", "ratio"])


def curve_stats(curve, ppl=None):
    """Training loss per (corpus, label, step), mean ± std over seeds: the trainings at the selected rate when
    perplexity.csv is given (the selection's other rates left out), else every curve."""
    if ppl is not None and "lr" in curve.columns:
        chosen = reported(ppl)
        on = [c for c in TABLES["train_curve.csv"].key if c in chosen and c in curve and c not in ("seed", "step")]
        if not chosen.empty:
            curve = curve.merge(chosen[on].drop_duplicates(), on=on)
    return seed_stats(_lm(curve), "loss", ["corpus", "label", "model", "step"]).sort_values("step")


KEY_BLIND = ("chance_accuracy", "floor_accuracy", "ceiling_accuracy", "key_collision_rate")


def recall_stats(recall):
    """Test accuracy of the selected rate per (label, recall cell), mean, std and 95% interval over seeds (clipped to
    [0, 1]), with what key-blind answers score there (chance, floor, ceiling: NaN when not recorded) and the key
    collision rate, and the selection (_selection, over every rate the first seed tried)."""
    labelled = with_labels(recall)
    labelled = labelled.assign(**{c: labelled.get(c, math.nan) for c in KEY_BLIND})
    rows = ok(labelled)
    rows = rows[rows.lr_selected == "true"]
    by = ["label", "model", *(c for c in RECALL_CELL if c in rows.columns)]
    out = seed_stats(rows, "accuracy", by, bounds=(0.0, 1.0))
    blind = rows.groupby(by, sort=False)[list(KEY_BLIND)].max()
    names = dict(chance_accuracy="chance", floor_accuracy="floor", ceiling_accuracy="ceiling")
    out = out.merge(blind.rename(columns=names).reset_index(), on=by)
    out = out.merge(_selection(rows, labelled, by), on=by, how="left")
    return out.assign(ratio=out["mean"] / out.chance).sort_values(by[2:], kind="stable")


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


def profile_drift(scaling, ops):
    """Per cell that both the scaling suite timed and the profiler measured on the host's wall clock (basis
    cpu_wall): model, mode, seq_len, the scaling suite's time_ms, the profiled step_ms and step_ms / time_ms.
    The same step measured twice in one run: a ratio far from 1 means the machine's speed changed between
    the two suites (the profiler's own overhead is a few percent, docs/measurement.md)."""
    columns = ["model", "mode", "seq_len", "time_ms", "step_ms", "ratio"]
    if scaling is None or ops is None or not {"step_ms", "basis"} <= set(ops.columns):
        return pd.DataFrame(columns=columns)
    key = [c for c in TABLES["scaling.csv"].cell if c in TABLES["op_breakdown.csv"].cell]
    ops, profiled, rows = ok(ops), {}, []
    for r in ops[ops.basis == "cpu_wall"].to_dict("records"):  # a row per category, each with the step's time
        profiled.setdefault(cell_key(r, key), pd.to_numeric(r["step_ms"], errors="coerce"))
    for t in ok(scaling).to_dict("records"):
        step = profiled.get(cell_key(t, key), math.nan)
        if t["time_ms"] > 0 and step > 0:
            rows.append((t["model"], t["mode"], t["seq_len"], t["time_ms"], step, step / t["time_ms"]))
    return pd.DataFrame(rows, columns=columns)


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
                out.append(
                    dict(dtype=dtype, error=column, value=worst[column], model=worst.model, seq_len=worst.seq_len)
                )
    return pd.DataFrame(out)
