"""README.md's "Findings on the committed CPU reference", number by number, against the committed references.

Each Quote is a phrase of that section with its numbers replaced by {}, and a function that computes those numbers,
written as the README writes them, from:
- results/baselines/cpu-quick/ (its CSVs, env.json and REPORT.md): the run the section is about;
- results/baselines/nvidia-h200/ and its three other passes (docs/gpu.md): the closing GPU paragraph;
- docs/cpu-reference.md for the runs that are not committed (the range over six runs, the previous reference, the
  wall time), whose `now` column and commit are checked against the committed reference in turn;
- the code, for the few numbers that are the implementation's (a block size, a tested tolerance).
A regenerated reference so fails here until the README and docs/cpu-reference.md say what it shows, and a new number
in the section fails until a Quote covers it. Torch-free and quick: csv, json and regular expressions.
"""

import csv
import json
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = "## Findings on the committed CPU reference"
CPU = ROOT / "results" / "baselines" / "cpu-quick"
ZOOLOGY = ROOT / "results" / "baselines" / "zoology-cpu"  # python -m bench.perplexity --preset zoology-cpu
GPU = ROOT / "results" / "baselines" / "nvidia-h200"
GPU_PASSES = (GPU, GPU / "repeat", GPU / "second-run", GPU / "second-run" / "repeat")  # docs/gpu.md's four passes
RUNS_PAGE = "docs/cpu-reference.md"
RUNS_HEADER = "| finding | ref (95% interval) | r1 | r2 | r3 | r4 | now | range |"
# a number as prose writes it (2,083  1.188  1e-5  8K), not the 32 of float32 or the 200 of H200
NUMBER = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e-?\d+)?K?|(?<=\.)\d+")
OPTION_COLUMNS = ("batch", "dim", "kernel_N", "kernel_H", "lambda_imag_exp", "conv_kernel", "compiled")


# --- reading ---------------------------------------------------------------------------------------------------


@cache
def rows(path):
    """The rows of a CSV that ran (status ok, or no status column)."""
    with open(path, newline="", encoding="utf-8") as f:
        return tuple(row for row in csv.DictReader(f) if row.get("status", "ok") == "ok")


@cache
def env(run):
    return json.loads((run / "env.json").read_text(encoding="utf-8"))


@cache
def text(relative):
    """A file of the repository, its whitespace collapsed (prose wraps anywhere)."""
    return " ".join((ROOT / relative).read_text(encoding="utf-8").split())


def grab(relative, pattern):
    match = re.search(pattern, text(relative))
    assert match, f"{relative} no longer says /{pattern}/"
    return match.groups()


def only(values):
    """The one value a set holds: the README names one setting."""
    assert len(values) == 1, values
    return tuple(values)


def fmt(x, digits):
    return f"{float(x):,.{digits}f}"


def kilo(seq_len):
    """A length as prose writes it: 2K for 2048, 256 for 256."""
    return f"{seq_len // 1024}K" if seq_len % 1024 == 0 else f"{seq_len}"


# --- the CPU reference -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    value: float
    low: float
    high: float
    detail: str


def finding(kind, mode, model, other="", at=None):
    """The one row of findings.csv (float32) of a kind (a slope, crossover, speed-up; bits_per_byte in mode lm ...)."""
    found = [
        Finding(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]), r["detail"])
        for r in rows(CPU / "findings.csv")
        if (r["finding"], r["mode"], r["dtype"], r["model"], r["other"]) == (kind, mode, "float32", model, other)
        and (at is None or r["detail"] == f"at seq_len {at}")
    ]
    assert len(found) == 1, f"findings.csv: {len(found)} rows of {kind} {mode} {model} {other} {at}"
    return found[0]


def sweep(model, mode, *, run=CPU, dtype="float32"):
    """{seq_len: row} of a model's length sweep in scaling.csv: its option set measured at the most lengths."""
    series = defaultdict(dict)
    for r in rows(run / "scaling.csv"):
        if (r["model"], r["mode"], r["dtype"]) == (model, mode, dtype):
            series[tuple(r[c] for c in OPTION_COLUMNS)][int(r["seq_len"])] = r
    assert series, f"{run.name}: no {model} {mode} {dtype} cells"
    return max(series.values(), key=len)


def at(model, mode, seq_len, column, **where):
    return float(sweep(model, mode, **where)[seq_len][column])


def level():
    """The intervals' coverage, as REPORT.md states it."""
    return grab(CPU.relative_to(ROOT) / "REPORT.md", r"### Findings with (\d+)% intervals")


def paper_claim():
    return grab(CPU.relative_to(ROOT) / "REPORT.md", r"the paper: (\d+)-(\d+)x on TPUs")


def slope(mode, model, *, lengths=True):
    """1.188, 2K, 8K, 1.047, 1.233: the exponent, the lengths fitted (when asked) and its interval."""
    found = finding("slope", mode, model)
    first, last = map(int, re.fullmatch(r"(?:secant of )?seq_len (\d+)\.\.(\d+)", found.detail).groups())
    fitted = (kilo(first), kilo(last)) if lengths else ()
    return fmt(found.value, 3), *fitted, fmt(found.low, 3), fmt(found.high, 3)


def slope_below_attention(mode, model="gss"):
    """How much lower the model's exponent is than attention's over their common lengths (findings.csv's
    slope_diff, negated), its interval, and (with `range_`) that range and the two exponents over it."""
    found = finding("slope_diff", mode, model, "attention")
    first, last, own, theirs = re.fullmatch(
        rf"secant of seq_len (\d+)\.\.(\d+); {model} ([\d.]+), attention ([\d.]+)", found.detail
    ).groups()
    assert found.high < 0, f"{mode}: {model}'s exponent is not separated from attention's"
    return (kilo(int(first)), kilo(int(last)), own, theirs), (
        fmt(-found.value, 3),
        fmt(-found.high, 3),
        fmt(-found.low, 3),
    )


def finding_one():
    """Finding 1's first sentence: the common range, both exponents, the paired differences, the previous ones."""
    (first, last, gss, attention), fwdbwd = slope_below_attention("fwdbwd")
    _, fwd = slope_below_attention("fwd")
    now_fwd, now_fwdbwd, *previous = grab(
        RUNS_PAGE,
        r"below attention's by ([\d.]+) \([\d.]+\.\.[\d.]+\) `fwd` and ([\d.]+) \([\d.]+\.\.[\d.]+\) `fwdbwd` now, "
        r"and by ([\d.]+) \([\d.]+\.\.[\d.]+\) and ([\d.]+) \([\d.]+\.\.[\d.]+\) in `r4`",
    )
    assert (now_fwd, now_fwdbwd) == (fwd[0], fwdbwd[0]), f"{RUNS_PAGE}: the slope differences of now"
    return first, last, gss, attention, *fwdbwd, *fwd, previous[1], previous[0]


def crossover(mode, model):
    found = finding("crossover", mode, model, "attention")
    return fmt(found.value, 0), fmt(found.low, 0), fmt(found.high, 0)


def speedups(mode, model, other, lengths, *, interval=True):
    """1.61, 1.57, 1.63, 2K for each length (the interval when asked)."""
    out = []
    for n in lengths:
        found = finding("speedup", mode, model, other, at=n)
        out += [fmt(found.value, 2), *((fmt(found.low, 2), fmt(found.high, 2)) if interval else ()), kilo(n)]
    return out


def gss_fast_inference_range():
    values = [finding("speedup", "fwd", "gss-fast", "gss", at=n).value for n in sweep("gss-fast", "fwd")]
    return fmt(min(values), 1), fmt(max(values), 1)


def memory_ratios(mode, shortest):
    """gss-fast's peak memory over gss's at each length from `shortest`."""
    lengths = [n for n in sorted(sweep("gss", mode)) if n >= shortest]
    return [at("gss-fast", mode, n, "peak_mem_mb") / at("gss", mode, n, "peak_mem_mb") for n in lengths]


def fastest(mode, seq_len):
    models = {r["model"] for r in rows(CPU / "scaling.csv") if r["mode"] == mode}
    times = {m: at(m, mode, seq_len, "time_ms") for m in models if seq_len in sweep(m, mode)}
    return min(times, key=times.get)


def fastest_at_4k():
    assert (fastest("fwdbwd", 4096), fastest("fwd", 4096)) == ("conv", "gss-fast"), "the fastest at 4K"
    return (kilo(4096),)


def kernel_n_ablation(model, seq_len=512):
    """The least and greatest time of a model's forward at one length over every kernel_N, and those kernel_N."""
    cells = [
        r
        for r in rows(CPU / "scaling.csv")
        if (r["model"], r["mode"], int(r["seq_len"]), r["conv_kernel"]) == (model, "fwd", seq_len, "")
    ]
    times, sizes = [float(r["time_ms"]) for r in cells], [int(r["kernel_N"]) for r in cells]
    return fmt(min(times), 1), fmt(max(times), 1), min(sizes), max(sizes)


def projections_share():
    [share] = [
        float(r["fraction"])
        for r in rows(CPU / "op_breakdown.csv")
        if (r["model"], r["mode"], r["category"]) == ("gss-fast", "fwd", "projection")
    ]
    return (fmt(100 * share, 0),)


def projections_at_peak():
    """gss-fast's forward projections: their share of the measured matrix-product peak (op_breakdown.csv's
    peak_frac), in percent, and that peak (env.json's limits), in GFLOP/s."""
    [frac] = [
        float(r["peak_frac"])
        for r in rows(CPU / "op_breakdown.csv")
        if (r["model"], r["mode"], r["category"]) == ("gss-fast", "fwd", "projection")
    ]
    return fmt(100 * frac, 0), fmt(env(CPU)["limits"]["matmul_flops_per_s"]["float32"] / 1e9, 0)


def gss_fast_roofline():
    """gss-fast's forward at the longest length every forward ran: its roofline fraction (findings.csv), that
    length, the fraction's range over the cell's repeats (the detail), the stage of its forward farthest from its
    roof (op_breakdown.csv: the smaller of each stage's larger fraction, among stages with a count) and that
    stage's fraction."""
    [row] = [
        r
        for r in rows(CPU / "findings.csv")
        if (r["finding"], r["mode"], r["model"]) == ("roofline_frac", "fwd", "gss-fast")
    ]
    length = int(re.search(r"at seq_len (\d+)", row["detail"]).group(1))
    low, high = re.search(r"repeats alone: ([\d.]+)\.\.([\d.]+)", row["detail"]).groups()
    stages = {
        r["category"]: max(float(r[c]) for c in ("peak_frac", "bandwidth_frac") if r[c])
        for r in rows(CPU / "op_breakdown.csv")
        if (r["model"], r["mode"]) == ("gss-fast", "fwd") and (r["peak_frac"] or r["bandwidth_frac"])
    }
    farthest = min(stages, key=stages.get)
    assert farthest == "fft_conv", farthest  # the README names it
    return fmt(row["value"], 3), kilo(length), low, high, fmt(100 * stages[farthest], 0)


def gss_fast_from_every_length():
    """gss-fast's fwdbwd crossover with attention at or below the shortest length (its value that length), and no
    forward crossover: faster at every length."""
    shortest = min(sweep("gss-fast", "fwdbwd"))
    found = finding("crossover", "fwdbwd", "gss-fast", "attention")
    assert found.value == found.low == shortest and found.detail.startswith(f"at or below seq_len {shortest}")
    assert not any(
        (r["finding"], r["mode"], r["model"], r["other"]) == ("crossover", "fwd", "gss-fast", "attention")
        for r in rows(CPU / "findings.csv")
    ), "gss-fast is faster than attention at every length forward"
    return kilo(shortest), kilo(shortest), fmt(found.low, 0), fmt(found.high, 0)


def memory(mode, seq_len, models):
    mib = [at(m, mode, seq_len, "peak_mem_mb") for m in models]
    assert mib == sorted(mib), f"the README lists {models} from the least memory up"
    return [fmt(x, 0) for x in mib]


def expanded_width():
    """GSS's hidden width at the reference's dim: dim_expansion_factor (its default in models/) x dim."""
    factor = grab("models/__init__.py", r'_GSS_DEFAULTS = \{[^}]*"dim_expansion_factor": (\d+)')[0]
    return fmt(int(factor) * at("gss", "fwd", 8192, "dim"), 0)


def lm_rows():
    """Test rows at the selected rate on the real corpus (Python's standard library)."""
    return [
        r
        for r in rows(CPU / "perplexity.csv")
        if (r["split"], r["lr_selected"], r["corpus"]) == ("test", "true", "stdlib")
    ]


def bits_per_byte(model, multiple=1):
    """Mean, std and count over seeds of a model's bits/byte at a multiple of the training length."""
    values = [
        float(r["bits_per_byte"])
        for r in lm_rows()
        if r["model"] == model and int(r["eval_seq_len"]) == multiple * int(r["train_seq_len"])
    ]
    return statistics.mean(values), statistics.stdev(values), len(values)


def lm_setting():
    return only({(r["dim"], r["depth"], r["steps"]) for r in lm_rows()})[0]


def with_interval(found, digits=3):
    return fmt(found.value, digits), fmt(found.low, digits), fmt(found.high, digits)


def lm_results(models):
    """Each model's bits/byte over seeds with its interval (findings.csv), checked against perplexity.csv's mean."""
    out = []
    for model in models:
        found = finding("bits_per_byte", "lm", model)
        assert math.isclose(
            found.value, bits_per_byte(model)[0], rel_tol=1e-5
        )  # findings.csv writes 6 significant digits
        out += with_interval(found)
    return out


def ahead(better, worse, *, separated):
    """How far `better` is ahead of `worse` in bits/byte, paired by seed (findings.csv's bits_per_byte_diff, either
    way round), with its interval; whether the interval excludes zero is checked."""
    diffs = {(r["model"], r["other"]): r for r in rows(CPU / "findings.csv") if r["finding"] == "bits_per_byte_diff"}
    if (better, worse) in diffs:
        r, sign = diffs[better, worse], -1
    else:
        r, sign = diffs[worse, better], 1
    value = sign * float(r["value"])
    low, high = sorted(sign * float(r[c]) for c in ("ci_low", "ci_high"))
    assert (low > 0) == separated, f"{better} over {worse}: {low}..{high}"
    return fmt(value, 3), fmt(low, 3), fmt(high, 3)


def lm_pairs():
    return (
        *ahead("conv", "dss", separated=True),
        *ahead("gss", "dss", separated=True),
        *ahead("gss", "conv", separated=False),
        *ahead("dss", "attention", separated=False),
    )


def seeds_per_training():
    """The seeds behind every quality finding: one count."""
    counts = {
        int(re.search(r"(\d+) seeds", r["detail"]).group(1))
        for r in rows(CPU / "findings.csv")
        if r["mode"] in ("lm", "recall")
    }
    return only(counts)


def bracketed():
    """Every selected learning rate (LM and recall) has a tried rate on either side."""
    for name, selects in (("perplexity.csv", lambda r: r["split"] == "val"), ("recall.csv", lambda r: True)):
        tried = defaultdict(set)
        chosen = {}
        for r in rows(CPU / name):
            if selects(r) and r["seed"] == "0":
                tried[r["model"]].add(float(r["lr"]))
                if r["lr_selected"] == "true":
                    chosen[r["model"]] = float(r["lr"])
        for model, rate in chosen.items():
            assert min(tried[model]) < rate < max(tried[model]), f"{name}: {model}'s rate {rate} is at an edge"
    return ()


def length_generalisation():
    """The longest multiple, attention's bits/byte there, and the most any other model moved from 1x."""
    multiples = sorted({int(r["eval_seq_len"]) // int(r["train_seq_len"]) for r in lm_rows()})
    others = {r["model"] for r in lm_rows()} - {"attention"}
    moved = max(abs(bits_per_byte(m, k)[0] - bits_per_byte(m)[0]) for m in others for k in multiples)
    return multiples[-1], fmt(bits_per_byte("attention", multiples[-1])[0], 3), fmt(moved, 3)


def recall():
    """The recall cell, its collision rate, attention's accuracy (and its worst seed), the others', the ceiling."""
    selected = [r for r in rows(CPU / "recall.csv") if r["lr_selected"] == "true"]
    [(seq_len, pairs, vocab, collisions, ceiling)] = {
        (r["seq_len"], r["num_kv_pairs"], r["vocab"], float(r["key_collision_rate"]), float(r["ceiling_accuracy"]))
        for r in selected
    }
    worst = min(float(r["accuracy"]) for r in selected if r["model"] == "attention")
    found = {m: finding("recall_accuracy", "recall", m) for m in ("attention", "gss", "conv", "dss")}
    assert found["conv"].high < ceiling and found["dss"].high < ceiling and found["gss"].value < ceiling
    return (
        seq_len,
        pairs,
        vocab,
        fmt(100 * collisions, 1),
        *with_interval(found["attention"]),
        fmt(math.floor(100 * worst) / 100, 2),
        *(x for m in ("gss", "conv", "dss") for x in with_interval(found[m])),
        fmt(ceiling, 3),
    )


def zoology():
    """The Zoology grid: its length, pair counts and widths; attention's accuracy at the one width that solves every
    cell; the best accuracy of any other model anywhere (test draw, selected rate, one seed)."""
    selected = [r for r in rows(ZOOLOGY / "recall.csv") if r["lr_selected"] == "true"]
    assert {r["seed"] for r in selected} == {"0"}, "one seed"
    accuracy = {(r["model"], int(r["num_kv_pairs"]), int(r["dim"])): float(r["accuracy"]) for r in selected}
    [length] = {r["seq_len"] for r in selected}
    pairs, widths = sorted({p for _, p, _ in accuracy}), sorted({d for _, _, d in accuracy})
    solving = [d for d in widths if all(accuracy["attention", p, d] >= 0.9 for p in pairs)]
    assert len(solving) == 1 and all(
        accuracy["attention", p, d] < 0.9 for p in pairs for d in widths if d != solving[0]
    )
    others = max(a for (m, _, _), a in accuracy.items() if m != "attention")
    assert others < 0.9
    return (
        length,
        *pairs,
        *widths,
        solving[0],
        *(fmt(accuracy["attention", p, solving[0]], 3) for p in pairs),
        *(d for d in widths if d != solving[0]),
        fmt(others, 3),
    )


def floor_accuracy():
    [floor] = {float(r["floor_accuracy"]) for r in rows(CPU / "recall.csv")}
    return (fmt(floor, 3),)


def decoding():
    """At the longest prompt re-run: gss's step, that prompt, and three per-token speed-ups."""
    steps = {(r["model"], r["method"], int(r["prompt_len"])): r["time_per_token_ms"] for r in rows(CPU / "decode.csv")}
    prompt = max(n for model, method, n in steps if (model, method) == ("gss", "reforward"))
    ms = {(model, method): float(steps[model, method, prompt]) for model, method, n in steps if n == prompt}
    gss, reforward = ms["gss", "recurrent"], ms["gss", "reforward"]
    kv_cache = ms["attention", "reforward"] / ms["attention", "kv_cache"]
    fast = reforward / ms["gss-fast", "reforward"]
    return fmt(gss, 1), fmt(prompt, 0), fmt(reforward / gss, 0), fmt(kv_cache, 0), fmt(fast, 1)


# --- the GPU reference -----------------------------------------------------------------------------------------


def fitted_exponent(sweep_rows):
    """As bench.analysis fits a slope: least squares of log time on log length over the longest max(3, n/2)."""
    lengths = sorted(sweep_rows)[-max(3, math.ceil(len(sweep_rows) / 2)) :]
    x = [math.log(n) for n in lengths]
    y = [math.log(float(sweep_rows[n]["time_ms"])) for n in lengths]
    return statistics.linear_regression(x, y).slope


def gpu():
    """torch, dim, batch; the length from which gss beats attention in every sweep of every pass; the bfloat16
    time ratios at the longest length of the committed pass; gss's exponents over the four passes (the README gives
    their range: the run predates times_ms, so its findings.csv has no interval)."""
    lengths, slower, exponents = set(), set(), []
    for run in GPU_PASSES:
        for mode in ("fwd", "fwdbwd"):
            for dtype in ("float32", "bfloat16"):
                gss, attention = (sweep(m, mode, run=run, dtype=dtype) for m in ("gss", "attention"))
                both = [n for n in gss if n in attention]
                lengths.update(both)
                slower.update(n for n in both if float(gss[n]["time_ms"]) >= float(attention[n]["time_ms"]))
                exponents.append(fitted_exponent(gss))
    faster_from = min(n for n in lengths if n > max(slower, default=0))
    longest = max(sweep("gss", "fwd", run=GPU, dtype="bfloat16"))
    bf16 = dict(run=GPU, dtype="bfloat16")
    ratios = [
        fmt(at("attention", mode, longest, "time_ms", **bf16) / at("gss", mode, longest, "time_ms", **bf16), 1)
        for mode in ("fwd", "fwdbwd")
    ]
    [(dim, batch)] = {(r["dim"], r["batch"]) for r in rows(GPU / "scaling.csv")}
    torch = ".".join(env(GPU)["torch"].split(".")[:2])
    return torch, dim, batch, kilo(faster_from), *ratios, kilo(longest), *(fmt(f(exponents), 2) for f in (min, max))


# --- the runs that are not committed: docs/cpu-reference.md ------------------------------------------------


@cache
def runs_table():
    """docs/cpu-reference.md's table of six runs: {finding label: (ref, r1, r2, r3, r4, now, range)}."""
    lines = (ROOT / RUNS_PAGE).read_text(encoding="utf-8").splitlines()
    table = {}
    for line in lines[lines.index(RUNS_HEADER) + 2 :]:
        if not line.startswith("|"):
            break
        label, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        table[label] = tuple(cells)
    return table


def across_runs(*labels):
    """The range over six runs of one row, or of several rows together (the least low..the greatest high)."""
    bounds = [runs_table()[label][-1].split("..") for label in labels]
    value = lambda s: float(s.replace(",", ""))  # noqa: E731
    return f"{min((low for low, _ in bounds), key=value)}..{max((high for _, high in bounds), key=value)}"


def committed_commit():
    return env(CPU)["git_commit"][:7]


def wall_time():
    minutes, seconds, commit = grab(RUNS_PAGE, r"\*\*(\d+) min (\d+) s\*\* at commit (\w+), the committed reference")
    assert commit == committed_commit(), f"{RUNS_PAGE} gives the wall time of {commit}, not of the reference"
    return minutes, seconds


def products_alone():
    """gss's time over its four matrix products' alone, in the two paired measurements of docs/cpu-reference.md."""
    length, first, second = grab(
        RUNS_PAGE,
        r"At (\d+K) the four matrix products .*?products alone [\d.]+ ms \(([\d.]+)x\)"
        r".*?the products [\d.]+ ms \(([\d.]+)x\)",
    )
    return fmt(first, 1), fmt(second, 1), length


def materialised_dss():
    """How much slower DSS is with its public code's kernel (docs/models.md), checked against the times given."""
    times, length, slow, fast = grab(
        "docs/models.md", r"materialised form is (\d+)x slower at (\d+K) .*?: ([\d.]+) s against ([\d.]+) s"
    )
    assert round(float(slow) / float(fast)) == int(times)
    return times, length


def previous_decode_step():
    """The gss step of the reference before `r3` (6b54980), as docs/cpu-reference.md's decoding notes give it."""
    return grab(RUNS_PAGE, r"The previous reference \(\w+\) read ([\d.]+) ms per gss step")


# --- the README's phrases --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    words: str  # the README's phrase, each number as {}
    numbers: object  # () -> the numbers, as the README writes them

    def __str__(self):
        return self.words.format(*self.numbers())


RUNS_FWD = [f"gss-fast / gss time, `fwd` {k}" for k in ("2K", "4K", "8K")]
RUNS_FWDBWD = [f"gss-fast / gss time, `fwdbwd` {k}" for k in ("2K", "4K", "8K")]
QUOTES = (
    Quote(
        "The quick preset on the development CPU ({} cores, torch {}, float32; {} min {} s for `run_all.py`)",
        lambda: (env(CPU)["cpu_count"], env(CPU)["torch"].split("+")[0], *wall_time()),
    ),
    Quote(
        "Intervals are {}%: of a timing, over the run's paired rounds (the noise within this run); of a training, "
        "Student's t over its {} seeds.",
        lambda: (*level(), *seeds_per_training()),
    ),
    # the README's finding 1
    Quote(
        "Over the lengths both ran, {}..{} (three lengths: the secant), a forward and backward step grows as "
        "seq_len^{} for gss and seq_len^{} for attention: gss's exponent is {} lower ({}..{}), and forward {} lower "
        "({}..{}), each the paired difference in which a drift of the machine cancels ({} and {} in the previous "
        "reference).",
        finding_one,
    ),
    Quote(
        "Over its own longest lengths, {}..{}, gss grows as seq_len^{} ({}..{}),",
        lambda: (*slope("fwdbwd", "gss")[1:3], slope("fwdbwd", "gss")[0], *slope("fwdbwd", "gss")[3:]),
    ),
    Quote(
        "gss overtakes attention above seq_len ≈ {} ({}..{}) forward and backward and ≈ {} ({}..{}) forward;",
        lambda: (*crossover("fwdbwd", "gss"), *crossover("fwd", "gss")),
    ),
    Quote(
        "over six quick runs the crossovers ranged {} and {}",
        lambda: (across_runs("crossover gss/attention, `fwdbwd`"), across_runs("crossover gss/attention, `fwd`")),
    ),
    Quote("At {} the gated CNN `conv` is the fastest forward and backward, `gss-fast` forward.", fastest_at_4k),
    # finding 2
    Quote("The same GSS, {}-{}x faster in inference", gss_fast_inference_range),
    Quote("outputs within {})", lambda: grab("tests/test_gss_fast.py", r"\(torch\.float32, (1e-\d+), 1e-\d+\)")),
    Quote("in blocks of {} positions", lambda: (fmt(grab("models/gss_fast.py", r"block_rows = (\d+)")[0], 0),)),
    Quote(
        "forward {}x ({}..{}) faster than `gss` at {}, {}x ({}..{}) at {}, {}x ({}..{}) at {}",
        lambda: speedups("fwd", "gss-fast", "gss", (2048, 4096, 8192)),
    ),
    Quote("(over six runs {}, {} and {})", lambda: [across_runs(label) for label in RUNS_FWD]),
    Quote(
        "in {}-{} of gss's memory from {};",
        lambda: (*(fmt(f(memory_ratios("fwd", 2048)), 2) for f in (min, max)), kilo(2048)),
    ),
    Quote(
        "forward and backward {}x ({}..{}) at {}, {}x ({}..{}) at {}, {}x ({}..{}) at {} (six runs: {}), "
        "in {}-{}% less memory.",
        lambda: (
            *speedups("fwdbwd", "gss-fast", "gss", (2048, 4096, 8192)),
            across_runs(*RUNS_FWDBWD),
            *(fmt(100 * (1 - f(memory_ratios("fwdbwd", 256))), 0) for f in (max, min)),
        ),
    ),
    Quote(
        "({}-{} ms at {} tokens for `kernel_N` {}..{}; gss {}-{} ms)",
        lambda: (
            *kernel_n_ablation("gss-fast")[:2],
            512,
            *kernel_n_ablation("gss-fast")[2:],
            *kernel_n_ablation("gss")[:2],
        ),
    ),
    Quote("and {}% of the forward is the projections", projections_share),
    Quote("at {}% of the machine's measured matrix-product peak ({} GFLOP/s):", projections_at_peak),
    Quote(
        "Its forward at {} is {} of its roofline ({}..{} over its repeats); its FFT convolution, at {}% of the "
        "peak, is the stage farthest from its roof.",
        lambda: (gss_fast_roofline()[1], gss_fast_roofline()[0], *gss_fast_roofline()[2:]),
    ),
    Quote("alone they run {}-{}x faster than gss at {} (paired rounds)", products_alone),
    Quote(
        "Forward and backward it is faster than attention from {} tokens on (its crossover at or below {}; {}..{}), "
        "and forward at every length.",
        gss_fast_from_every_length,
    ),
    # finding 3
    Quote("GSS is not {}-{}x faster than DSS here.", paper_claim),
    Quote('The GSS paper reports "{}-{}x" over DSS on TPUs.', paper_claim),
    Quote("On this CPU at dim {},", lambda: only({r["dim"] for r in rows(CPU / "scaling.csv")})),
    Quote(
        "gss is {}x ({}..{}) faster forward at {} tokens, {}x at {}, {}x ({}..{}) at the paper's {} and "
        "{}x ({}..{}) at {};",
        lambda: (
            *speedups("fwd", "gss", "dss", (256,)),
            *speedups("fwd", "gss", "dss", (2048,), interval=False),
            *speedups("fwd", "gss", "dss", (4096, 8192)),
        ),
    ),
    Quote(
        "forward and backward {}x at {} and {}x ({}..{}) at {} (six runs at {}: {} and {})",
        lambda: (
            *speedups("fwdbwd", "gss", "dss", (256,), interval=False),
            *speedups("fwdbwd", "gss", "dss", (4096,)),
            kilo(4096),
            across_runs("gss / dss time, `fwd` 4K"),
            across_runs("gss / dss time, `fwdbwd` 4K"),
        ),
    ),
    Quote("makes DSS {}x slower at {}:", materialised_dss),
    # finding 4
    Quote(
        "For forward and backward at {} chunked attention needs {} MiB, attention {}, conv {}, dss {}, "
        "gss-fast {} and gss {};",
        lambda: (
            kilo(4096),
            *memory("fwdbwd", 4096, ("attention-chunked", "attention", "conv", "dss", "gss-fast", "gss")),
        ),
    ),
    Quote(
        "for inference at {} gss-fast needs {} MiB (its blocks hold no {}-wide activation), dss {} and gss {}.",
        lambda: (
            kilo(8192),
            *memory("fwd", 8192, ("gss-fast",)),
            expanded_width(),
            *memory("fwd", 8192, ("dss", "gss")),
        ),
    ),
    # finding 5
    Quote("Tiny LMs (dim {}, depth {}, {} steps, the same test bytes)", lm_setting),
    Quote("every selected rate with a tried rate on either side", bracketed),
    Quote(
        "reach {} ({}..{}) bits/byte on Python source with gss, {} ({}..{}) with conv, {} ({}..{}) with dss and "
        "{} ({}..{}) with attention.",
        lambda: lm_results(("gss", "conv", "dss", "attention")),
    ),
    Quote(
        "Paired by seed, conv is {} ({}..{}) ahead of dss and gss {} ({}..{}); gss's lead over conv, {} ({}..{}), "
        "and attention's gap to dss, {} ({}..{}), are not separated from zero.",
        lm_pairs,
    ),
    Quote("With {}× the context, attention degrades to {}; the others move by at most {}.", length_generalisation),
    # finding 6
    Quote(
        "At length {} with {} pairs (vocabulary {}: {}% of the queries find their key repeated as filler before "
        "them), attention answers {} ({}..{}) of the queries (every seed above {}), gss {} ({}..{}), conv {} "
        "({}..{}) and dss {} ({}..{}): conv's and dss's intervals lie below {}, what the best key-blind rule scores",
        recall,
    ),
    Quote("gss's mean too; a random value token scores {}.", floor_accuracy),
    Quote(
        "On the CPU's share of Zoology's width sweep (length {} with {} and {} pairs, widths {}, {} and {}, one seed:",
        lambda: zoology()[:6],
    ),
    Quote(
        "attention solves both cells at width {} ({} and {}), not at {} or {} at this budget; gss, conv and dss solve "
        "neither at any width (at most {}).",
        lambda: zoology()[6:],
    ),
    # finding 7
    Quote(
        "costs {} ms per token at a {}-token prompt, {}× less than re-running the forward per token as the original "
        "sampling loop does (attention's KV cache: {}×; gss-fast re-runs its forward {}x faster than gss",
        decoding,
    ),
    Quote("An earlier reference's {} ms does not come back", previous_decode_step),
    # the GPU reference
    Quote(
        "On one NVIDIA H200 (torch {}, bfloat16, dim {}, batch {}), gss is faster than attention from {} tokens "
        "on ({}x forward, {}x forward and backward at {}), its time growing as seq_len^{}-{}:",
        gpu,
    ),
)


# --- the tests ---------------------------------------------------------------------------------------------------


def section():
    """The findings section, its list markers dropped and whitespace collapsed."""
    readme = README.read_text(encoding="utf-8")
    start = readme.index(SECTION)
    body = readme[start : readme.index("\n## ", start + len(SECTION))]
    return " ".join(re.sub(r"^\d+\. ", "", body, flags=re.M).split())


@pytest.mark.parametrize("quote", QUOTES, ids=lambda quote: quote.words[:50])
def test_the_readme_says_what_the_reference_shows(quote):
    assert not NUMBER.search(quote.words), f"a number in the words, where none is computed: {quote.words}"
    assert str(quote) in section(), f"the README should say: {quote}"


def test_every_number_in_the_findings_is_checked():
    body = section()
    covered = [False] * len(body)
    for quote in QUOTES:
        for match in re.finditer(re.escape(str(quote)), body):
            covered[match.start() : match.end()] = [True] * (match.end() - match.start())
    prose = re.sub(r"\]\([^)]*\)", lambda link: " " * len(link.group()), body)  # not the paths of links and figures
    unchecked = [m.group() for m in NUMBER.finditer(prose) if not all(covered[m.start() : m.end()])]
    assert not unchecked, f"numbers in the README's findings that no Quote checks: {unchecked}"


def test_the_runs_table_ends_with_the_committed_reference():
    """docs/cpu-reference.md's `now` column is the committed reference, and each range spans its six runs."""
    assert grab(RUNS_PAGE, r"the committed reference, `run_all.py` at (\w+) \(`now`\)") == (committed_commit(),)
    for label, (*runs, spread) in runs_table().items():
        if match := re.fullmatch(r"crossover (\S+)/(\S+), `(\w+)`", label):
            model, other, mode = match.groups()
            found, digits = finding("crossover", mode, model, other), 0
        elif match := re.fullmatch(r"(\S+) / (\S+) time, `(\w+)` (\d+)K", label):
            model, other, mode, k = match.groups()  # "gss-fast / gss time": gss-fast's speed-up over gss
            found, digits = finding("speedup", mode, model, other, at=1024 * int(k)), 2
        else:
            model, mode = re.fullmatch(r"slope (\S+) `(\w+)`, .*", label).groups()
            found, digits = finding("slope", mode, model), 2
        now = f"{fmt(found.value, digits)} ({fmt(found.low, digits)}..{fmt(found.high, digits)})"
        assert runs[-1] == now, f"{RUNS_PAGE}, {label}: `now` says {runs[-1]}, the reference {now}"
        values = sorted(
            (m.group() for run in runs if (m := NUMBER.search(run))), key=lambda s: float(s.replace(",", ""))
        )
        assert spread == (f"{values[0]}..{values[-1]}" if len(values) == len(runs) else f"≤ {values[-1]}"), label
