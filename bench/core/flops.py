"""FLOPs of a measured step: torch.utils.flop_counter.FlopCounterMode, completed where it is blind.

Convention (the one the models' analytic `.flops()` formulas use):
- matrix products and convolutions as FlopCounterMode counts them (2*m*n*k; a convolution as executed,
  2*B*Cout*(Cin/groups)*K*Lout, bias ignored), times 4 when the operands are complex (8*m*n*k);
- FFTs (aten._fft_r2c / _fft_c2r / _fft_c2c, forward or inside a backward): 2.5*n*log2(n) per real
  transform of length n (r2c: the input length, c2r: the output length), 5*n*log2(n) per complex one,
  times the number of transforms. A multi-dim transform uses n = product of the transformed lengths,
  exact for c2c and a close upper bound for r2c/c2r (whose inner passes are half-length complex);
- attention (every SDPA kernel, CPU ones included): forward 2*B*h*Lq*Lk*(d + dv) (= 4*B*h*L^2*d),
  backward 2*B*h*Lq*Lk*(3*d + 2*dv) (= 2.5x forward), FlopCounterMode's own backward convention;
  is_causal halves both, as FlashAttention's benchmarks do. An SDPA call that falls back to the math
  path (explicit matmuls plus a mask) is counted dense through its bmm's;
- elementwise ops, reductions, softmax etc. are not counted.

Formulas go through FlopCounterMode's `custom_mapping` (not the global registry, which refuses ops
that already have a formula and would change every other FlopCounterMode in the process). They are
marked `_get_raw` so that they receive tensors, not shapes, and can see the dtype and the op's flags.
"""

import math

import torch
from torch.utils import flop_counter as _fc
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten

__all__ = ["attention_flops", "count_flops", "count_flops_by_op", "fft_flops", "flop_counter"]


def fft_flops(n: int, *, count: int = 1, complex_input: bool = False) -> float:
    """`count` transforms of length n: 2.5 n log2 n each for a real signal, 5 n log2 n for a complex one."""
    if n <= 1 or count <= 0:
        return 0.0
    return (5.0 if complex_input else 2.5) * n * math.log2(n) * count


def attention_flops(
    *,
    batch: int,
    heads: int,
    q_len: int,
    kv_len: int,
    head_dim: int,
    v_head_dim: int | None = None,
    causal: bool = False,
    backward: bool = False,
) -> int:
    """QK^T and PV (forward); recomputed QK^T, dP, dV, dQ, dK (backward). Causal counts half the dense L^2 work."""
    dv = head_dim if v_head_dim is None else v_head_dim
    per_pair = (3 * head_dim + 2 * dv) if backward else (head_dim + dv)
    flops = 2 * batch * heads * q_len * kv_len * per_pair
    return flops // 2 if causal else flops


def _raw(formula):
    formula._get_raw = True  # FlopCounterMode then passes tensors, not shapes
    return formula


def _arg(packet, name, args, kwargs, default=None):
    """An op argument by schema name, whether it came positionally, as a kwarg, or was dropped as a default."""
    if name in kwargs:
        return kwargs[name]
    for i, a in enumerate(packet.default._schema.arguments):
        if a.name == name:
            return args[i] if not a.kwarg_only and i < len(args) else default
    return default


def _complex_aware(base):
    def formula(*args, out_val=None, **kwargs):
        flops = base(*args, out_val=out_val, **kwargs)
        is_complex = any(isinstance(a, torch.Tensor) and a.is_complex() for a in args)
        return 4 * flops if is_complex else flops

    return _raw(formula)


def _fft(kind):
    def formula(x, dim, *args, out_val=None, **kwargs):
        dims = [d % x.ndim for d in dim]
        lengths = [x.shape[d] for d in dims]
        count = x.numel() // max(math.prod(lengths), 1)
        if kind == "c2r":  # the signal is the real output, whose last transformed length is last_dim_size
            last = args[1] if len(args) > 1 else kwargs["last_dim_size"]
            lengths[-1] = int(last)
        return fft_flops(math.prod(lengths), count=count, complex_input=kind == "c2c")

    return _raw(formula)


def _conv_backward(grad_out, x, w, *args, out_val=None, **kwargs):
    """Each requested gradient costs one forward convolution. FlopCounterMode's own formula ignores
    `groups` for the weight gradient, counting a depthwise conv's backward H times too high."""
    transposed, output_mask = args[4], args[7]
    forward = _fc.conv_flop_count(list(x.shape), list(w.shape), list(grad_out.shape), transposed=transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def _sdpa(packet, *, backward):
    # The aten._scaled_dot_product_* ops all take (B, h, L, d) tensors; backward ops lead with grad_out.
    def formula(*args, out_val=None, **kwargs):
        q, k, v = args[1:4] if backward else args[0:3]
        b, h, lq, d = q.shape
        return attention_flops(
            batch=b,
            heads=h,
            q_len=lq,
            kv_len=k.shape[-2],
            head_dim=d,
            v_head_dim=v.shape[-1],
            causal=bool(_arg(packet, "is_causal", args, kwargs, False)),
            backward=backward,
        )

    return _raw(formula)


def _causal_halved(packet, base):
    # Lower-level kernels (varlen / nested layouts): keep torch's shape logic, add the causal halving.
    def formula(*args, out_val=None, **kwargs):
        flops = base(*args, out_val=out_val, **kwargs)
        causal = _arg(packet, "is_causal", args, kwargs, False) or _arg(packet, "custom_mask_type", args, kwargs, 0)
        return flops // 2 if causal else flops

    return _raw(formula)


def _op(name):
    return getattr(aten, name, None)  # None where this torch version lacks the op


def _registered(names):
    """(op, torch's formula) of each op of `names` that this torch version has and FlopCounterMode counts."""
    return [(op, _fc.flop_registry[op]) for op in map(_op, names) if op is not None and op in _fc.flop_registry]


# the ops whose FlopCounterMode formula is kept and completed: matrix products and convolutions (complex operands),
# and the lower-level attention kernels (causal halving)
_PRODUCTS = (
    "mm",
    "addmm",
    "bmm",
    "baddbmm",
    "convolution",
    "_convolution",
    "cudnn_convolution",
    "convolution_overrideable",
    "_slow_conv2d_forward",
)
_LOWER_ATTENTION = (
    "_flash_attention_forward",
    "_flash_attention_backward",
    "_efficient_attention_forward",
    "_efficient_attention_backward",
)


def _build_mapping():
    mapping = {op: _complex_aware(base) for op, base in _registered(_PRODUCTS)}
    mapping[aten.convolution_backward] = _complex_aware(_conv_backward)
    for kind in ["r2c", "c2r", "c2c"]:
        if (op := _op(f"_fft_{kind}")) is not None:
            mapping[op] = _fft(kind)
    for kernel in ["flash_attention", "efficient_attention", "cudnn_attention", "flash_attention_for_cpu"]:
        for backward in (False, True):
            op = _op(f"_scaled_dot_product_{kernel}" + ("_backward" if backward else ""))
            if op is not None:
                mapping[op] = _sdpa(op, backward=backward)
    for op, base in _registered(_LOWER_ATTENTION):
        mapping[op] = _causal_halved(op, base)
    return mapping


_MAPPING = _build_mapping()


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode with the completed formulas, for callers that want a context manager (not reentrant)."""
    return FlopCounterMode(display=False, custom_mapping=dict(_MAPPING))


def count_flops_by_op(fn) -> dict[str, int]:
    """Run fn() once; FLOPs per aten op (e.g. 'aten.mm'), rounded to integers."""
    with flop_counter() as counter:
        fn()
    counts = counter.get_flop_counts().get("Global", {})
    return {str(op): int(round(v)) for op, v in counts.items()}


def count_flops(fn) -> int:
    """Run fn() once; total FLOPs under the convention above."""
    with flop_counter() as counter:
        fn()
    return int(round(counter.get_total_flops()))
