"""Gated State Space layer (Mehta et al. 2022, "Long Range Language Modeling via Gated State Spaces").

Behaviour, constructor arguments and parameter names follow gated-state-spaces-pytorch 0.1.0, so a
state_dict of either loads into the other with strict=True. Two additions, both off by default:
the DSS convolution can run in the time domain (`conv_mode="direct"`, optionally truncated to
`conv_kernel` taps), and every stage is marked with a profiler range.

Incremental decoding (`init_state`, `step`, `prefill`) runs the DSS as its diagonal recurrence, whose
state has the same size at every position; a kernel truncated to T taps is stepped as a convolution.

`dss_recurrence_ref` and `dss_ref` are the slow references of the convolution paths: the same recurrence,
stepped one position at a time in complex128, which the tests compare with the FFT and direct paths on
outputs and gradients. The gated unit around the DSS lives in block.py, shared with the gated CNN.
"""

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.profiler import record_function

from .block import GatedUnit, NormedMixer
from .lm import LM
from .ops import (
    CONSTANT,
    ConvState,
    check_token,
    direct_conv,
    direct_conv_flops,
    fft_conv,
    fft_conv_flops,
    matmul_flops,
)

CONV_MODES = ("fft", "direct")


@dataclass
class RecurrentState:
    """DSS recurrence state s (B, H, N) complex, plus the constants exp(Delta Lambda) ((N,), or (H, N) with a
    per-channel Delta) and C' (H, N)."""

    s: torch.Tensor
    decay: torch.Tensor = field(metadata=CONSTANT)
    C: torch.Tensor = field(metadata=CONSTANT)


class DSS(NormedMixer):
    """Diagonal state space (DSS-EXP) mixer over H channels with N complex modes per kernel.

    Kernel (Gupta et al. 2022, used by GSS section 3.1): K[l, h] = Re(sum_n C'[h, n] exp(Delta_h Lambda_n l))
    with C' = C (exp(Delta_h Lambda) - 1) / Lambda and Lambda = -exp(Lambda_real) + i Lambda_imag, where the
    imaginary part is exponentiated when `dss_kernel_lambda_imag_exp` is set. GSS has no step: Delta = 1
    (`delta()` is None); the DSS layer of dss.py learns one Delta per channel.
    """

    def __init__(
        self,
        *,
        dim,
        kernel_N=512,
        dss_kernel_lambda_imag_exp=True,
        conv_mode="fft",
        conv_kernel=None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if conv_mode not in CONV_MODES:
            raise ValueError(f"unknown conv_mode {conv_mode!r}; valid: {', '.join(CONV_MODES)}")
        if conv_kernel is not None and (
            conv_mode == "fft" or isinstance(conv_kernel, bool) or not isinstance(conv_kernel, int) or conv_kernel <= 0
        ):
            raise ValueError(
                f"conv_kernel must be None or a positive integer with conv_mode='direct', got "
                f"{conv_kernel!r} with conv_mode={conv_mode!r}"
            )
        factory = dict(device=device, dtype=dtype)
        self.dim, self.kernel_N = dim, kernel_N
        self.dss_kernel_lambda_imag_exp = dss_kernel_lambda_imag_exp
        self.conv_mode, self.conv_kernel = conv_mode, conv_kernel
        self.norm = nn.LayerNorm(dim, **factory)
        self.Lambda_real = nn.Parameter(torch.randn(kernel_N, **factory))
        self.Lambda_imag = nn.Parameter(torch.randn(kernel_N, **factory))
        self.C_real = nn.Parameter(torch.randn(dim, kernel_N, **factory))
        self.C_imag = nn.Parameter(torch.randn(dim, kernel_N, **factory))
        self.param_D = nn.Parameter(torch.randn(dim, **factory))  # learned weighted residual

    def delta(self):
        """The per-channel step Delta (H,), or None for Delta = 1 (GSS's DSS, which has no step)."""
        return None

    def lambda_and_c(self):
        """Delta Lambda and the discretised C' (H, N), both complex: Lambda (N,) itself when Delta = 1, else
        (H, N) (complex64 for float16/bfloat16 parameters: there is no complex type of that precision).
        C' divides by Lambda, not by Delta Lambda, as the DSS paper's code (DSS-EXP) does."""
        Delta = self.delta()
        Lambda_real, Lambda_imag, C_real, C_imag = (
            p.float() if p.dtype in (torch.float16, torch.bfloat16) else p
            for p in (self.Lambda_real, self.Lambda_imag, self.C_real, self.C_imag)
        )
        imag = Lambda_imag.exp() if self.dss_kernel_lambda_imag_exp else Lambda_imag
        Lambda = -Lambda_real.exp() + 1j * imag
        dtLambda = Lambda if Delta is None else Delta.to(Lambda_real.dtype)[:, None] * Lambda  # (N,) or (H, N)
        C = (C_real + 1j * C_imag) * (dtLambda.exp() - 1) / Lambda
        return dtLambda, C

    def kernel(self, seq_len):
        """The real convolution kernel K of shape (seq_len, H)."""
        with record_function("dss_kernel"):
            dtLambda, C = self.lambda_and_c()
            if dtLambda.ndim == 2:  # a step per channel: no (N, L) matrix that all channels share
                return vandermonde_blocks(C, dtLambda, seq_len)
            positions = torch.arange(seq_len, device=C.device)
            S = (dtLambda[:, None] * positions).exp()  # (N, L): exp(Lambda_n l)
            return torch.einsum("hn,nl->lh", C, S).real

    def taps(self, seq_len):
        """Kernel taps the convolution actually uses at this length."""
        if self.conv_mode == "fft" or self.conv_kernel is None:
            return seq_len
        return min(self.conv_kernel, seq_len)

    @property
    def is_recurrent(self):
        """Whether every tap is used, so that the kernel is exactly the recurrence's impulse response."""
        return self.conv_mode == "fft" or self.conv_kernel is None

    def _forward(self, x):
        """y (B, L, H) and the normalised input u (B, L, H) in the kernel's dtype."""
        u = self.normed(x)
        residual = u * self.param_D
        # FFTs and complex kernels have no low-precision CPU path and lose accuracy in one: keep float32.
        with torch.autocast(x.device.type, enabled=False):
            K = self.kernel(self.taps(x.shape[1]))
            u = u.to(K.dtype)
            y = fft_conv(u, K) if self.conv_mode == "fft" else direct_conv(u, K)
        return y.to(residual.dtype) + residual, u  # a no-op but for float16/bfloat16 parameters

    def _constants(self, *, device=None, dtype=None):
        """exp(Delta Lambda) and C' (H, N) in the complex dtype matching `dtype` (default: the parameters')."""
        dtLambda, C = self.lambda_and_c()
        ctype = C.dtype if dtype is None else torch.complex128 if dtype == torch.float64 else torch.complex64
        return dtLambda.exp().to(device=device, dtype=ctype), C.to(device=device, dtype=ctype)

    def init_state(self, batch, *, max_len=None, device=None, dtype=None):
        """State for an empty prefix: s = 0 (B, H, N) complex, or, with a truncated kernel of T taps, the
        last T normalised inputs (B, T, H) (DSS sec. 3: the kernel is the impulse response of
        s_t = exp(Delta Lambda) s_{t-1} + u_t, y_t = Re(C' s_t), which T taps cut short). max_len is unused."""
        with torch.autocast(self.C_real.device.type, enabled=False):
            if not self.is_recurrent:
                return ConvState.empty(self.kernel(self.conv_kernel), batch, device=device, dtype=dtype)
            decay, C = self._constants(device=device, dtype=dtype)
            s = torch.zeros(batch, self.dim, self.kernel_N, device=C.device, dtype=C.dtype)
            return RecurrentState(s, decay, C)

    def step(self, x_t, state):
        """One position x_t (B, H) -> (y_t (B, H), state); the state is advanced in place and returned."""
        check_token(x_t, self.dim)
        u = self.norm(x_t)
        residual = u * self.param_D
        with torch.autocast(x_t.device.type, enabled=False):
            if isinstance(state, ConvState):
                return state.step(u).to(residual.dtype) + residual, state
            state.s = state.decay * state.s + u.to(state.s.dtype)[..., None]  # (B, H, N)
            y = torch.einsum("bhn,hn->bh", state.s, state.C).real
        return y.to(residual.dtype) + residual, state

    def prefill(self, x, *, max_len=None):
        """The forward over a prompt x (B, L, H) and the state after it, without stepping:
        s_L = sum_k exp(Delta Lambda (L - 1 - k)) u_k, one complex einsum over the prompt."""
        y, u = self._forward(x)
        with torch.autocast(x.device.type, enabled=False):
            if not self.is_recurrent:
                return y, ConvState.after(u, self.kernel(self.conv_kernel))
            dtLambda, C = self.lambda_and_c()
            if dtLambda.ndim == 2:  # a step per channel: no (H, N, L) matrix of exponentials
                s = decayed_sum(dtLambda, u)
            else:
                lags = torch.arange(x.shape[1] - 1, -1, -1, device=x.device)
                S = (dtLambda[:, None] * lags).exp()  # (N, L): exp(Delta Lambda (L - 1 - k))
                s = torch.einsum("blh,nl->bhn", u.to(S.dtype), S)
        return y, RecurrentState(s, dtLambda.exp(), C)

    def flops(self, batch, seq_len):
        taps = self.taps(seq_len)
        computed = math.prod(kernel_blocks(taps)) if self.delta() is not None else taps  # whole blocks of taps
        kernel = matmul_flops(self.dim, self.kernel_N, computed, complex_=True)
        if self.conv_mode == "fft":
            return kernel + fft_conv_flops(batch, seq_len, self.dim)
        return kernel + direct_conv_flops(batch, seq_len, self.dim, taps)


def kernel_blocks(L):
    """(blocks, c) of vandermonde_blocks at length L >= 1: c = ceil(sqrt(L)) taps per block, blocks * c >= L."""
    c = math.isqrt(L - 1) + 1
    return -(-L // c), c


def vandermonde_blocks(C, dtLambda, L):
    """Re(sum_n C[h, n] exp(dtLambda[h, n] l)) for l < L, as (L, H), for a Lambda per channel (H, N), without the
    (H, N, L) matrix of exponentials: with l = a c + b (c = ceil(sqrt L)), exp(dtLambda l) = exp(dtLambda c a)
    exp(dtLambda b), so the kernel is one batched (H) complex product of (blocks x N) by (N x c), from H N (blocks
    + c) exponentials instead of H N L. The same sum (the DSS code materialises the matrix), in the same H N L
    complex multiply-adds, as a BLAS product."""
    blocks, c = kernel_blocks(L)
    inner = (dtLambda[..., None] * torch.arange(c, device=C.device)).exp()  # (H, N, c): exp(dtLambda b)
    outer = (dtLambda[..., None] * (c * torch.arange(blocks, device=C.device))).exp() * C[..., None]  # (H, N, blocks)
    K = torch.bmm(outer.transpose(1, 2), inner)  # (H, blocks, c): K[h, a, b] at l = a c + b
    return K.reshape(K.shape[0], blocks * c)[:, :L].real.T


def decayed_sum(dtLambda, u):
    """sum_k exp(dtLambda[h, n] (L - 1 - k)) u[b, k, h] as (B, H, N), the state after a prompt u (B, L, H) for a
    Lambda per channel (H, N), by vandermonde_blocks' split of the lag j = L - 1 - k = a c + r: one batched (H)
    product of the (N x c) inner powers by the lag-ordered input in blocks (c x B blocks), then a sum over the
    blocks weighted by the outer powers; H N (blocks + c) exponentials instead of H N L."""
    (B, L, H), N = u.shape, dtLambda.shape[1]
    blocks, c = kernel_blocks(L)
    lagged = torch.nn.functional.pad(u.flip(1), (0, 0, 0, blocks * c - L))  # position j holds lag j
    lagged = lagged.reshape(B, blocks, c, H).permute(3, 2, 0, 1).reshape(H, c, B * blocks).to(dtLambda.dtype)
    inner = (dtLambda[..., None] * torch.arange(c, device=u.device)).exp()  # (H, N, c)
    outer = (dtLambda[..., None] * (c * torch.arange(blocks, device=u.device))).exp()  # (H, N, blocks)
    s = (torch.bmm(inner, lagged).reshape(H, N, B, blocks) * outer[:, :, None]).sum(-1)  # (H, N, B)
    return s.permute(2, 0, 1)


def dss_recurrence_ref(u, Lambda, C):
    """Reference for the DSS convolution (fft_conv or direct_conv with DSS.kernel's full length): the diagonal
    recurrence whose impulse response is the kernel (DSS sec. 3), s_t = exp(Delta Lambda) s_{t-1} + u_t and
    y_t = Re(sum_n C'[h, n] s_t[h, n]), stepped one position at a time in complex128 (O(B L H N), differentiable).
    u (B, L, H) real; Lambda = Delta Lambda, (N,) or per channel (H, N), and C' (H, N) complex, as
    DSS.lambda_and_c returns them -> y (B, L, H) float64."""
    decay, C = Lambda.to(torch.complex128).exp(), C.to(torch.complex128)
    s = torch.zeros(u.shape[0], *C.shape, device=u.device, dtype=torch.complex128)  # (B, H, N)
    ys = []
    for t in range(u.shape[1]):
        s = decay * s + u[:, t, :, None].double()
        ys.append(torch.einsum("bhn,hn->bh", s, C).real)
    return torch.stack(ys, dim=1)


def dss_ref(dss, x):
    """Reference for DSS.forward with the full kernel: norm, the recurrence above, plus the D residual.
    x (B, L, H) -> (B, L, H) float64; the norm and the kernel's constants are computed in the module's dtype,
    so a float64 reference of a float32 module takes a float64 copy of it."""
    u = dss.norm(x)
    return dss_recurrence_ref(u, *dss.lambda_and_c()) + u * dss.param_D


class GSS(GatedUnit):
    """Gated State Space layer: the gated unit with a DSS mixer (GSS paper, Pseudocode 3.2)."""

    mixer_class = DSS  # built after the gated unit's parameters (FastGSS's FastDSS too: a seed initialises both alike)

    def __init__(
        self,
        *,
        dim,
        dim_expansion_factor=4,
        dss_kernel_N=512,
        dss_kernel_H=256,
        reverse_seq=False,
        dss_kernel_lambda_imag_exp=True,
        conv_mode="fft",
        conv_kernel=None,
        device=None,
        dtype=None,
    ):
        super().__init__(
            dim=dim,
            dim_expansion_factor=dim_expansion_factor,
            hidden_H=dss_kernel_H,
            reverse_seq=reverse_seq,
            device=device,
            dtype=dtype,
        )
        self.dss = self.mixer_class(
            dim=dss_kernel_H,
            kernel_N=dss_kernel_N,
            dss_kernel_lambda_imag_exp=dss_kernel_lambda_imag_exp,
            conv_mode=conv_mode,
            conv_kernel=conv_kernel,
            device=device,
            dtype=dtype,
        )

    @property
    def mixer(self):
        return self.dss


class GatedStateSpacesLM(LM):
    """Embedding -> `depth` GSS layers -> logits, as in the reference; `labels` give the cross-entropy."""

    def __init__(
        self,
        *,
        num_tokens,
        dim,
        depth,
        dim_expansion_factor=4,
        dss_kernel_N=512,
        dss_kernel_H=256,
        dss_kernel_lambda_imag_exp=True,
        device=None,
        dtype=None,
    ):
        def layer():
            return GSS(
                dim=dim,
                dim_expansion_factor=dim_expansion_factor,
                dss_kernel_N=dss_kernel_N,
                dss_kernel_H=dss_kernel_H,
                dss_kernel_lambda_imag_exp=dss_kernel_lambda_imag_exp,
                device=device,
                dtype=dtype,
            )

        super().__init__(num_tokens=num_tokens, dim=dim, depth=depth, make_layer=layer, device=device, dtype=dtype)
