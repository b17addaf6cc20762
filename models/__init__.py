"""The one model registry of GSS Bench.

    layer = build_layer("gss", dim=512, kernel_N=256)    # (B, L, dim) -> (B, L, dim)
    lm = build_lm("attention", num_tokens=256, dim=512, depth=4)
    hybrid = build_lm("gss-hybrid", num_tokens=256, dim=512, depth=8, chunk=512)

Options carry the suite's names everywhere: kernel_N, lambda_imag_exp (GSS family: gss, gss-fast, gss-direct,
gss-hybrid; and dss), kernel_H, dim_expansion_factor (GSS family), conv_kernel (gss-direct, conv), heads /
head_dim (attention, attention-chunked), chunk (attention-chunked, gss-hybrid), hybrid_every (gss-hybrid).
gss-fast computes gss's function (same options, parameters and state_dict) in less time. A new model is one
file plus one entry in
SPECS; every suite, test and plot picks it up. NAMES are the layers (build_layer, and build_lm of `depth` alike
layers); LM_NAMES add the LM-level models of LM_SPECS, mixes of layers that only build_lm builds.

Every layer also decodes incrementally (inference only; a state is advanced in place and returned):

    state = layer.init_state(batch, max_len=None)    # empty prefix
    y, state = layer.prefill(x)                      # (B, L, dim): forward's output and the state after it
    y_t, state = layer.step(x_t, state)              # (B, dim): forward's output at the next position
    state_nbytes(state)                              # per-sequence bytes (kernels shared by all excluded)
    lm.generate(prompt_ids, new_tokens, method="recurrent" | "kv_cache" | "reforward")
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

from .attention import AttentionBlock, KVCache
from .block import GatedUnit
from .chunked import ChunkedAttentionBlock
from .conv import GatedConv
from .dss import DSSLayer
from .gss import DSS, GSS, GatedStateSpacesLM, RecurrentState
from .gss_fast import FastDSS, FastGSS
from .hybrid import hybrid_layers
from .lm import GENERATE_METHODS, LM
from .ops import ConvState, state_nbytes


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _positive_int_or_none(name, value):
    if value is not None:
        _positive_int(name, value)


def _positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _boolean(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


VALIDATORS = {
    "kernel_N": _positive_int,
    "kernel_H": _positive_int,
    "dim_expansion_factor": _positive_number,
    "lambda_imag_exp": _boolean,
    "conv_kernel": _positive_int_or_none,
    "heads": _positive_int_or_none,
    "head_dim": _positive_int_or_none,
    "chunk": _positive_int,
    "hybrid_every": _positive_int,
}


def _gss(conv_mode, cls=GSS):
    def build(dim, o, factory):
        return cls(
            dim=dim,
            dim_expansion_factor=o["dim_expansion_factor"],
            dss_kernel_N=o["kernel_N"],
            dss_kernel_H=o["kernel_H"],
            dss_kernel_lambda_imag_exp=o["lambda_imag_exp"],
            conv_mode=conv_mode,
            conv_kernel=o.get("conv_kernel"),
            **factory,
        )

    return build


def _conv(dim, o, factory):
    return GatedConv(
        dim=dim,
        dim_expansion_factor=o["dim_expansion_factor"],
        kernel_H=o["kernel_H"],
        conv_kernel=o["conv_kernel"],
        **factory,
    )


def _attention(dim, o, factory):
    return AttentionBlock(dim=dim, heads=o["heads"], head_dim=o["head_dim"], **factory)


def _dss(dim, o, factory):
    return DSSLayer(dim=dim, kernel_N=o["kernel_N"], lambda_imag_exp=o["lambda_imag_exp"], **factory)


def _attention_chunked(dim, o, factory):
    return ChunkedAttentionBlock(dim=dim, chunk=o["chunk"], heads=o["heads"], head_dim=o["head_dim"], **factory)


def _gss_hybrid(num_tokens, dim, depth, o, factory):
    kinds = hybrid_layers(depth, o["hybrid_every"])
    options = {kind: {k: o[k] for k in SPECS[kind].defaults} for kind in dict.fromkeys(kinds)}
    for kind, kind_options in options.items():
        build_layer(kind, dim=dim, device="meta", **kind_options)  # validate once, before allocating anything
    return LM(
        num_tokens=num_tokens,
        dim=dim,
        depth=depth,
        **factory,
        make_layer_at=lambda i: build_layer(kinds[i], dim=dim, **factory, **options[kinds[i]]),
    )


@dataclass(frozen=True)
class ModelSpec:
    build: Callable
    defaults: dict
    summary: str


_GSS_DEFAULTS = {"kernel_N": 512, "kernel_H": 256, "dim_expansion_factor": 4, "lambda_imag_exp": True}

SPECS = {
    "gss": ModelSpec(_gss("fft"), dict(_GSS_DEFAULTS), "GSS, DSS convolution by FFT (the reference)"),
    "gss-fast": ModelSpec(
        _gss("fft", FastGSS),
        dict(_GSS_DEFAULTS),
        "gss computed faster (real-arithmetic kernel, cached while autograd is off): same function",
    ),
    "gss-direct": ModelSpec(
        _gss("direct"),
        {**_GSS_DEFAULTS, "conv_kernel": None},
        "GSS, DSS kernel applied as a time-domain convolution of conv_kernel taps",
    ),
    "conv": ModelSpec(
        _conv,
        {"kernel_H": 256, "dim_expansion_factor": 4, "conv_kernel": 64},
        "gated CNN: GSS with a learned causal depthwise convolution",
    ),
    "attention": ModelSpec(
        _attention, {"heads": None, "head_dim": None}, "pre-norm causal Transformer block, SDPA + rotary, 4x MLP"
    ),
    "dss": ModelSpec(
        _dss,
        {"kernel_N": 64, "lambda_imag_exp": False},
        "DSS layer (DSS-EXP kernel over dim channels, learned per-channel step) + 4x MLP",
    ),
    "attention-chunked": ModelSpec(
        _attention_chunked,
        {"heads": None, "head_dim": None, "chunk": 512},
        "the attention block within non-overlapping chunks of `chunk` tokens",
    ),
}
NAMES = tuple(SPECS)

LM_SPECS = {  # build(num_tokens, dim, depth, options, factory) -> an LM
    "gss-hybrid": ModelSpec(
        _gss_hybrid,
        {**_GSS_DEFAULTS, "heads": None, "head_dim": None, "chunk": 512, "hybrid_every": 4},
        "gss layers with every hybrid_every-th layer attention-chunked (an LM only)",
    ),
}
LM_NAMES = NAMES + tuple(LM_SPECS)


def spec(name):
    """The ModelSpec of a layer (SPECS) or of an LM-level model (LM_SPECS)."""
    if name not in LM_NAMES:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(LM_NAMES)}")
    return SPECS[name] if name in SPECS else LM_SPECS[name]


def options_of(name):
    """The option names a model (a layer or an LM-level one) takes (so a sweep does not multiply out options that
    do not apply)."""
    return tuple(spec(name).defaults)


def resolve_options(name, **options):
    """Defaults merged with `options`, validated; unknown options raise ValueError naming the valid ones."""
    defaults = spec(name).defaults
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; valid options: {', '.join(defaults)}"
        )
    resolved = {**defaults, **options}
    for key, value in resolved.items():
        VALIDATORS[key](key, value)
    return resolved


def build_layer(name, *, dim, device=None, dtype=None, **options):
    """A (B, L, dim) -> (B, L, dim) layer with `.flops(batch, seq_len)` and `.num_params()`."""
    if name in LM_SPECS:
        raise ValueError(
            f"{name!r} is an LM-level model, not a layer: build it with build_lm (layers: {', '.join(NAMES)})"
        )
    model = spec(name)
    _positive_int("dim", dim)
    return model.build(dim, resolve_options(name, **options), dict(device=device, dtype=dtype))


def build_lm(name, *, num_tokens, dim, depth, device=None, dtype=None, **options):
    """Embedding -> `depth` layers of `name` -> logits, through the one LM wrapper; `name` from LM_NAMES."""
    _positive_int("num_tokens", num_tokens)
    _positive_int("depth", depth)
    if name in LM_SPECS:
        return LM_SPECS[name].build(
            num_tokens, dim, depth, resolve_options(name, **options), dict(device=device, dtype=dtype)
        )
    build_layer(name, dim=dim, device="meta", **options)  # validate once, before allocating anything
    return LM(
        num_tokens=num_tokens,
        dim=dim,
        depth=depth,
        device=device,
        dtype=dtype,
        make_layer=lambda: build_layer(name, dim=dim, device=device, dtype=dtype, **options),
    )


__all__ = [
    "DSS",
    "GENERATE_METHODS",
    "GSS",
    "LM",
    "LM_NAMES",
    "LM_SPECS",
    "NAMES",
    "SPECS",
    "AttentionBlock",
    "ChunkedAttentionBlock",
    "ConvState",
    "DSSLayer",
    "FastDSS",
    "FastGSS",
    "GatedConv",
    "GatedStateSpacesLM",
    "GatedUnit",
    "KVCache",
    "RecurrentState",
    "build_layer",
    "build_lm",
    "hybrid_layers",
    "options_of",
    "resolve_options",
    "state_nbytes",
]
