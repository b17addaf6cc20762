"""A faster GSS layer: the same function, parameters and state_dict as gss.GSS, computed with less work.

- The DSS kernel in real arithmetic: K[l, h] = Re(sum_n C'[h, n] exp(dtLambda_n l)) is
  sum_n Re C' e^{a_n l} cos(b_n l) - Im C' e^{a_n l} sin(b_n l) (dtLambda = a + ib), one real (L x 2N) @ (2N x H)
  product, 4 H N L FLOPs instead of the complex einsum's 8 H N L, written in the (L, H) layout fft_conv reads,
  with a hand-written backward (RealKernel) and no subnormal numbers (vandermonde).
- A one-entry cache of the kernel and its spectrum rfft(K, 2L), used whenever autograd is not recording (no_grad
  or inference_mode, in train() and eval() alike): repeated forwards at one length compute neither again. See
  FastDSS._cached for what keys it.
- FFTConv: the FFT convolution's backward in real transforms, where autograd's chain runs complex ones.
- With autograd off, the two GELUs, the gate's product and the residual in place (FastGSS.forward): no new
  (B, L, E) tensors for them.
- With autograd off on the CPU, the position-wise part in blocks of 1024 rows (FastGSS.block_rows): no
  (B, L, E) tensor at all, and no page faults for them.

Everything else (norms, projections, init_state / step / prefill) is GSS's own: the FFTs along the last
dimension, one fused input projection and param_D folded into the kernel were measured and were no faster than
the noise. The projections are matrix products GSS defines, run at the machine's matmul rate by both
implementations: with the kernel cached they are most of the forward, which bounds what any implementation of
this function gains over gss. The measured gains: docs/models.md.
"""

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from torch.fft import irfft, rfft
from torch.profiler import record_function

from .gss import DSS, GSS
from .ops import check_sequence, fft_conv_flops, rfft_flops

_KERNEL_PARAMS = ("Lambda_real", "Lambda_imag", "C_real", "C_imag")


def vandermonde(a, b, seq_len):
    """V (L, 2N) = [e^{a l} cos(b l), e^{a l} sin(b l)] for l < L, the real and imaginary parts of exp(dtLambda l)
    (dtLambda = a + ib), with the products l a and l b rounded as the complex product is. A decay below
    tiny / eps (1e-31 in float32) is set to 0: its terms are far below the kernel's resolution, and it keeps
    subnormal numbers, slow on CPUs, out of the exponentials, the products and the matmuls."""
    N, finfo = a.shape[0], torch.finfo(a.dtype)
    floor = math.log(finfo.tiny / finfo.eps)
    positions = torch.arange(seq_len, device=a.device, dtype=a.dtype)[:, None]  # (L, 1)
    exponent = positions * a  # (L, N), <= 0: Re(Lambda) = -exp(Lambda_real)
    dead = exponent < floor
    decay = exponent.clamp_(min=floor).exp_().masked_fill_(dead, 0)
    angle = positions * b
    V = torch.empty(seq_len, 2 * N, device=a.device, dtype=a.dtype)
    torch.mul(decay, angle.cos(), out=V[:, :N])
    torch.mul(decay, angle.sin_(), out=V[:, N:])
    return V


class RealKernel(torch.autograd.Function):
    """K (L, H) = vandermonde(a, b, L) @ W^T for W = [Wc, Ws] = [Re C', -Im C'] (H, 2N), saving V alone for the
    backward. dK/dW is V; d(e^{al} cos bl, e^{al} sin bl) by a is l (Vc, Vs) and by b is l (-Vs, Vc), so with
    M = (l gK)^T V = [Mc, Ms] (H, 2N), ga = sum_h (Wc Mc + Ws Ms) and gb = sum_h (Ws Mc - Wc Ms): gW and M are
    one (2H, L) @ (L, 2N) product, and nothing of size (L, 2N) is formed but V (autograd's chain would
    recompute the cosines and sines, and gK W with its elementwise passes is slower)."""

    @staticmethod
    def forward(ctx, a, b, W, seq_len):
        V = vandermonde(a, b, seq_len)
        ctx.save_for_backward(V, W)
        return V @ W.T  # (L, H), contiguous: no copy before the FFT

    @staticmethod
    @once_differentiable
    def backward(ctx, gK):
        V, W = ctx.saved_tensors
        H, N = W.shape[0], W.shape[1] // 2
        positions = torch.arange(V.shape[0], device=V.device, dtype=V.dtype)[:, None]
        need_ab = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        both = (torch.cat((gK, gK * positions), dim=1) if need_ab else gK).T @ V  # (2H or H, 2N)
        gW = both[:H] if ctx.needs_input_grad[2] else None
        ga = gb = None
        if need_ab:
            Wc, Ws, Mc, Ms = W[:, :N], W[:, N:], both[H:, :N], both[H:, N:]
            ga = (Wc * Mc + Ws * Ms).sum(0)
            gb = (Ws * Mc - Wc * Ms).sum(0)
        return ga, gb, gW, None


class FFTConv(torch.autograd.Function):
    """ops.fft_conv (y = the first L of irfft(rfft(u) rfft(K)), transforms of length 2L) with its backward in
    real transforms: gu is the correlation irfft(G conj(K_f)) and gK the batch sum irfft(sum_b G conj(U_f)),
    G = rfft(gy), one rfft and two irffts, where autograd's chain runs complex-to-complex transforms."""

    @staticmethod
    def forward(ctx, u, K):
        n = 2 * u.shape[-2]
        U, K_f = rfft(u, n=n, dim=-2), rfft(K, n=n, dim=-2)
        ctx.save_for_backward(U, K_f)
        return irfft(U * K_f, n=n, dim=-2)[..., : u.shape[-2], :]

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        U, K_f = ctx.saved_tensors
        L = gy.shape[-2]
        G = rfft(gy, n=2 * L, dim=-2)
        gu = gK = None
        if ctx.needs_input_grad[0]:
            gu = irfft(G * K_f.conj(), n=2 * L, dim=-2)[..., :L, :]
        if ctx.needs_input_grad[1]:
            gK = irfft((G * U.conj()).sum(dim=tuple(range(G.ndim - 2))), n=2 * L, dim=-2)[:L]
        return gu, gK


def _autograd_off():
    return torch.is_inference_mode_enabled() or not torch.is_grad_enabled()


class FastDSS(DSS):
    """DSS (conv_mode="fft" only) with the real-arithmetic kernel and the no-grad kernel cache.

    `kernel_computations` counts the kernels actually computed (cache misses and grad-enabled calls)."""

    def __init__(self, *, conv_mode="fft", **options):
        if conv_mode != "fft":
            raise ValueError(f"FastDSS supports conv_mode='fft' only, got {conv_mode!r}")
        super().__init__(conv_mode=conv_mode, **options)
        self._kernel_cache = None  # (key, snapshot of the kernel's parameters, K, K's spectrum): the last only
        self.kernel_computations = 0

    def __getstate__(self):  # a copy (deepcopy, pickle) starts with an empty cache
        return {**super().__getstate__(), "_kernel_cache": None}

    def clear_kernel_cache(self):
        self._kernel_cache = None

    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), ...: the old kernel would only hold memory
        self.clear_kernel_cache()
        return super()._apply(fn, *args, **kwargs)

    def kernel(self, seq_len):
        """The real convolution kernel K (seq_len, H), as DSS.kernel (see `_cached`)."""
        with record_function("dss_kernel"):
            return self._compute_kernel(seq_len) if not _autograd_off() else self._cached(seq_len)[0]

    def _cached(self, seq_len):
        """(K, its spectrum rfft(K, 2 seq_len) along the length), for calls with autograd off.

        With autograd not recording, the last kernel is reused when it was computed at the same length, device,
        dtype and lambda_imag_exp from parameters with the same data pointers and version counters (which every
        in-place change bumps: optimizer steps, load_state_dict, edits under no_grad), and, as a last guard
        against edits the version counters miss (through `.data`, new storage at a freed address, parameters
        created in inference mode, which have no version counter), equal values: a stale kernel is never used.
        With autograd recording, the cache is neither read nor written. The returned tensor may be the cached
        one: do not modify it in place."""
        params = [getattr(self, name) for name in _KERNEL_PARAMS]
        key = (
            seq_len,
            params[0].device,
            params[0].dtype,
            self.dss_kernel_lambda_imag_exp,
            tuple((p.data_ptr(), None if p.is_inference() else p._version) for p in params),
        )
        cache = self._kernel_cache
        # under CUDA-graph capture no value can be read back: the key (pointers, versions) decides alone
        capturing = params[0].is_cuda and torch.cuda.is_current_stream_capturing()
        if (
            cache is not None
            and cache[0] == key
            and (capturing or all(torch.equal(p, saved) for p, saved in zip(params, cache[1])))
        ):
            return cache[2:]
        self._kernel_cache = None  # free the old kernel before computing the new one
        K = self._compute_kernel(seq_len)
        self._kernel_cache = (key, tuple(p.detach().clone() for p in params), K, rfft(K, n=2 * seq_len, dim=-2))
        return self._kernel_cache[2:]

    def _forward(self, x):
        """DSS._forward with FFTConv's backward, and with autograd off the cached kernel spectrum."""
        u = self.normed(x)
        residual = u * self.param_D
        with torch.autocast(x.device.type, enabled=False), record_function("fft_conv"):
            L, n = x.shape[1], 2 * x.shape[1]
            if _autograd_off():
                with record_function("dss_kernel"):
                    K_f = self._cached(L)[1]
                u = u.to(K_f.real.dtype)
                y = irfft(rfft(u, n=n, dim=-2).mul_(K_f), n=n, dim=-2)[..., :L, :]
            else:
                K = self.kernel(L)
                u = u.to(K.dtype)
                y = FFTConv.apply(u, K)
        return y.to(residual.dtype) + residual, u

    def _compute_kernel(self, seq_len):
        """[e^{a l} cos(b l), e^{a l} sin(b l)] (L, 2N) @ [Re C', -Im C']^T (2N, H), all real."""
        self.kernel_computations += 1
        with torch.autocast(self.C_real.device.type, enabled=False):  # full precision, as the complex einsum
            dtLambda, C = self.lambda_and_c()
            if dtLambda.ndim != 1:
                raise ValueError("FastDSS computes the kernel of a Lambda shared by all channels (Delta = None)")
            return RealKernel.apply(dtLambda.real, dtLambda.imag, torch.cat((C.real, -C.imag), dim=1), seq_len)

    def flops(self, batch, seq_len, *, cached=False):
        """As executed: the real kernel product 2 * L * 2N * H and the FFT convolution as DSS counts it, the
        kernel's product and its rfft left out when `cached` (elementwise work, the exponentials included, is
        not counted)."""
        if cached:
            return rfft_flops(2 * seq_len, count=2 * batch * self.dim)
        return 4 * self.dim * self.kernel_N * seq_len + fft_conv_flops(batch, seq_len, self.dim)


class FastGSS(GSS):
    """GSS with a FastDSS mixer: same constructor, parameters, state_dict, outputs and recurrence (init_state,
    step and prefill are GSS's). Only conv_mode="fft"."""

    mixer_class = FastDSS

    def __init__(self, *, conv_mode="fft", **options):
        if conv_mode != "fft":
            raise ValueError(f"FastGSS supports conv_mode='fft' only, got {conv_mode!r}")
        super().__init__(conv_mode=conv_mode, **options)

    # With autograd off on the CPU, the position-wise part (W_u and its GELU, W_g, the gate's product, W_o and
    # the residual) runs over blocks of this many rows (batch x positions), so no (B, L, E) tensor is formed:
    # a block (8 MiB at E 2048) comes from memory the allocator reuses, where whole (B, L, E) tensors of glibc's
    # 32 MiB mmap threshold and up (L 4K and up at E 2048) are mapped afresh, page by page, at every call.
    # A CUDA device runs it whole (no page faults there, and each block would cost kernel launches).
    block_rows = 1024

    def forward(self, x):
        """GatedUnit.forward; with autograd off, the GELUs, the gate's product and the residual in place, and on
        the CPU the position-wise part in blocks of `block_rows` rows (no new (B, L, E) tensors)."""
        if not _autograd_off():
            return super().forward(x)
        check_sequence(x, self.dim)
        if self.reverse_seq:
            x = x.flip(1)
        with record_function("norm"):
            h = self.norm(x)
        with record_function("projection"):
            v = torch.ops.aten.gelu_(F.linear(h, self.to_v[0].weight))
        mixed = self.mix(v)
        L, block = x.shape[1], self.block_length(x)
        out = None
        with record_function("projection"):
            for start in range(0, L, block):
                rows = slice(start, start + block)
                u = torch.ops.aten.gelu_(F.linear(h[:, rows], self.to_u[0].weight))
                gated = self.to_out(self.to_gate(mixed[:, rows]).mul_(u))
                if block >= L:  # one block: the layer's output is W_o's
                    out = gated.add_(x) if gated.dtype == x.dtype else gated + x
                else:
                    if out is None:
                        out = x.new_empty(x.shape, dtype=torch.result_type(gated, x))
                    torch.add(gated, x[:, rows], out=out[:, rows])
        return out.flip(1) if self.reverse_seq else out

    def block_length(self, x):
        """Positions per block of the position-wise part with autograd off (see block_rows)."""
        return max(1, self.block_rows // x.shape[0]) if x.device.type == "cpu" else x.shape[1]

    def flops(self, batch, seq_len, *, cached=False):
        """GatedUnit's count with the mixer's as executed (no kernel product when `cached`)."""
        projections = super().flops(batch, seq_len) - self.mix_flops(batch, seq_len)
        return projections + self.dss.flops(batch, seq_len, cached=cached)
