"""What every column of GSS Bench's CSVs means, and which hold numbers (torch-free): the vocabulary bench.schema's
tables are written in. A name means the same thing in every CSV; a new column is one line here (its meaning, as a
Number when it holds one) and one in its table."""


class Number(str):
    """The meaning of a column that holds a number: its readers parse it as one (NUMERIC)."""


COLUMNS_DOC = {
    "run_id": "the run directory's name",
    "model": "registry name (`models.NAMES`)",
    "mode": "`fwd` (inference) or `fwdbwd` (forward + backward of the output's mean)",
    "dtype": "`float32`, or the autocast dtype (`bfloat16`, `float16`) over float32 weights; numerics also `float64`",
    "device": "`cpu` or `cuda:<device name>` (perplexity.csv: `cpu` or `cuda`)",
    "batch": Number("sequences per step"),
    "seq_len": Number("tokens per sequence"),
    "dim": Number("model width"),
    "depth": Number("layers of the LM"),
    "kernel_N": "DSS state size N (GSS family)",
    "kernel_H": "channels of the state space convolution H (GSS family, conv)",
    "lambda_imag_exp": "DSS kernel exponentiates the imaginary part of Lambda (GSS family)",
    "conv_kernel": "convolution taps actually used (conv, gss-direct; `seq_len` for full)",
    "compiled": "the layer ran under `torch.compile`",
    "params": Number("trainable parameters"),
    "flops": Number("FLOPs of one step as counted (docs/measurement.md; op_breakdown: the category's, per step)"),
    "tflops_per_s": Number(
        "counted FLOPs / median step time, in 1e12 per second (op_breakdown: the category's FLOPs / its time)"
    ),
    "min_bytes": Number(
        "bytes the step must move at least: input, parameters, output once, and their gradients in fwdbwd "
        "(the model's min_bytes; op_breakdown: the category's, docs/measurement.md); empty where unknown"
    ),
    "floor_ms": Number(
        "the step's roofline floor, ms: max(flops / the dtype's measured matrix-product rate, min_bytes / the "
        "measured bandwidth), against env.json's limits; empty without limits or min_bytes"
    ),
    "roofline_frac": Number(
        "floor_ms / the step's time (gpu_ms where the cell has it, else time_ms): the share of its roofline the step "
        "reached; empty with floor_ms"
    ),
    "peak_frac": Number(
        "op_breakdown: the category's achieved FLOP/s over the measured matrix-product rate of the cell's dtype; "
        "empty where it counts no FLOPs or there are no limits"
    ),
    "bandwidth_frac": Number(
        "op_breakdown: the category's min_bytes at the measured bandwidth, over its time (the share of the "
        "bandwidth floor it reached); empty where min_bytes is not stated or there are no limits"
    ),
    "tokens_per_s": Number("tokens per second: batch x seq_len / median step time (decode: batch / time per token)"),
    "time_ms": Number("median step time, ms (op_breakdown: the category's time, mean over the profiled steps)"),
    "time_iqr_ms": Number("interquartile range of the timed repeats, ms"),
    "repeats": Number("timed repeats behind the median"),
    "times_ms": "every timed repeat in the order run, ms, space-separated (6 significant digits); empty in runs "
    "made before it existed",
    "gauge_times_ms": "the drift gauge's time in each round of the cell's interleaved group (one fixed matrix "
    "product timed with every round), ms, space-separated, round i beside times_ms's repeat i; empty in runs made "
    "before it existed",
    "gpu_ms": Number(
        "CUDA: median time of the step replayed from a CUDA graph (about 20 ms of calls captured in one graph, a "
        "replay's time over its calls: no host launching kernels), ms; empty on CPU and where the step could not be "
        "captured (gpu_note)"
    ),
    "gpu_times_ms": "CUDA: every timed replay's time per call, in the order run, ms, space-separated (6 significant "
    "digits); empty with gpu_ms",
    "gpu_note": "CUDA: why the cell has no gpu_ms (the stage, warm-up, capture or replay, and the exception); its "
    "eager time_ms stands",
    "peak_mem_mb": Number("peak memory above what was allocated before the step (decode: one decode step), MiB"),
    "status": "`ok`, `oom`, `error` or `skipped`",
    "error": "the error message, or the reason a cell was skipped",
    "corpus": "corpus name or path",
    "corpus_sha256": "SHA-256 of the corpus bytes used",
    "seed": Number("training seed"),
    "train_seq_len": Number("training length"),
    "eval_seq_len": Number("evaluation window length"),
    "steps": Number("optimiser steps"),
    "tokens": Number("training tokens (steps x batch x train_seq_len)"),
    "lr": Number("peak learning rate"),
    "train_loss": Number("mean training loss over the last 10% of the steps, nats per byte"),
    "eval_loss": Number("validation loss, nats per byte"),
    "bits_per_byte": Number("eval_loss / ln 2"),
    "ppl": Number("exp(eval_loss)"),
    "entropy_floor_bpb": Number("exact entropy rate of the synthetic source, bits per byte (empty for real text)"),
    "time_s": Number("training wall time, s"),
    "step": Number("optimiser step a curve point ends at"),
    "loss": Number("mean training loss over the steps since the last point, nats"),
    "num_kv_pairs": Number("key-value pairs per recall sequence"),
    "vocab": Number("recall vocabulary size"),
    "final_loss": "mean training loss over the last 10% of the steps, nats per token",
    "accuracy": Number("share of queried values recalled correctly, on the test draw"),
    "val_accuracy": Number("the same on the validation draw that selects the learning rate"),
    "chance_accuracy": Number("accuracy of answering with a random one of the sequence's values: 1 / num_kv_pairs"),
    "floor_accuracy": Number("accuracy of answering each query with a random value token: 1 / (vocab - vocab // 2)"),
    "ceiling_accuracy": Number(
        "accuracy of the best key-blind rule (the j-th query answered with the value of one fixed pair rank), "
        "estimated by simulating the generator"
    ),
    "key_collision_rate": Number("share of queries whose key also appears as filler before the query (simulated)"),
    "split": "`val` (selects the learning rate: first seed, 1x only) or `test` (reported)",
    "lr_selected": "`true` on the rows of the rate selected for this model and option set",
    "window_floor_bpb": Number(
        "the least expected bits/byte on the scored bytes of a window with its context, "
        "knowing the source's phase (synthetic only)"
    ),
    "category": "a range of `models/`, `backward` or `other`",
    "fraction": Number("the category's share of the step (a cell's fractions sum to 1)"),
    "step_ms": "profiled step time, ms",
    "profiled_steps": "steps the times average over",
    "basis": "`cpu_wall` or `cuda_kernels`: what time the categories share",
    "trace": "the cell's trace directory, relative to the run directory",
    "method": "`recurrent`, `kv_cache` or `reforward`",
    "prompt_len": Number("prompt tokens"),
    "new_tokens": Number("tokens generated per prompt"),
    "prefill_ms": Number("median time of one prefill, ms (empty for reforward)"),
    "time_per_token_ms": Number("median time of one decode step, ms"),
    "time_per_token_iqr_ms": "interquartile range of the decode steps, ms",
    "state_mb": Number("decoding state of the whole batch after prefill, MiB (empty for reforward)"),
    "out_rel_err": Number("||out - out_ref|| / ||out_ref|| against float64"),
    "grad_rel_err": Number("relative error of the input gradient against float64"),
    "out_branch_rel_err": "out_rel_err of the branch alone (the residual x left out)",
    "grad_branch_rel_err": "grad_rel_err of the branch alone",
    "finding": "`slope`, `slope_diff`, `crossover` or `speedup` of length sweeps (bench.analysis.findings); "
    "`bits_per_byte`, `bits_per_byte_diff`, `recall_accuracy` over seeds (bench.analysis.quality); "
    "`recall_solved_width` of a Zoology grid (bench.analysis.zoology)",
    "other": "the model a crossover's `model` overtakes, the reference (`attention`) of a speedup or slope_diff, or "
    "the model a bits_per_byte_diff subtracts; empty otherwise",
    "value": "the finding, in `unit`: a slope fitted to each length's time relative to the drift gauge of its rounds "
    "(gauge_times_ms; the recorded time_ms in runs without it); a slope_diff, crossover or speedup from the two "
    "cells' paired rounds at each length, the median over the rounds of their time ratio (the ratio of time_ms where "
    "a cell has no times_ms); a quality finding's mean over seeds",
    "ci_low": "lower end of the 95% interval: the 2.5th percentile over bootstrap resamples of the cells' rounds (a "
    "slope's relative to the gauge, or each cell's repeats alone without gauge times; a slope_diff's or crossover's "
    "of the two cells' rounds in pairs, a resample without a crossover counted at the grid's edge, the shortest "
    "length when the interval reaches below it); a speedup's: the distribution-free interval of the median of its "
    "paired ratios; a quality finding's: Student's t over seeds; empty when a cell has no times_ms, a crossover's "
    "interval is withheld (detail says why) or there is one seed",
    "ci_high": "upper end of the same (a crossover's reaching above the grid: the longest length)",
    "unit": "`exponent` (slope: time ~ seq_len^k; slope_diff: a difference of two), `tokens` (crossover), `x` "
    "(speedup: a time ratio), `bits/byte`, `accuracy` or `width`",
    "detail": "the sweep's options (`kernel_N=64`), the lengths used (`seq_len 2048..8192`; `secant of seq_len ...` "
    "over three lengths equally spaced on the log axis), a slope_diff's two exponents, whether a crossover's interval "
    "reaches past the grid and in what share of resamples or why it is withheld, `no drift gauge` where a slope's "
    "interval does not carry drift between lengths; a quality finding's cell and seeds",
}

# Columns parsed as numbers when a CSV is read back; every other column keeps the string written.
NUMERIC = frozenset(name for name, meaning in COLUMNS_DOC.items() if isinstance(meaning, Number))
