"""The DSS layer (Gupta et al. 2022, "Diagonal State Spaces are as Effective as Structured State Spaces"), the
GSS paper's DSS baseline, as the DSS paper's public code (ag1988/dss, DSS-EXP) defines it.

One layer is a whole block: x + W_o GELU(DSS(x)), the DSS normalising its input first and adding D u, then the
Transformer's 4x GELU MLP with its own LayerNorm and residual (attention.py's MLPBlock). The DSS is GSS's DSS
mixer (gss.py: the same kernel code, FFT convolution, D residual, recurrence and step mode) over all dim channels,
with a learned step Delta per channel: K[l, h] = Re(sum_n C[h, n] (exp(Delta_h Lambda_n) - 1) / Lambda_n
exp(Delta_h Lambda_n l)). Initialisation as in the public code: log Delta uniform in [log 1e-3, log 1e-1], Lambda
the skew-HiPPO eigenvalues (`skew_hippo_eigenvalues`), C and D standard normal.

Kept simpler than the public code: one Delta per channel for both parts of Lambda (its default `sep_dt_re_im`
learns two), and 1 / Lambda without its 1e-7 clamp (Re Lambda = -exp(Lambda_real) is never 0).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from .attention import MLPBlock
from .gss import DSS, dss_ref
from .ops import matmul_flops

DELTA_MIN, DELTA_MAX = 1e-3, 1e-1


def skew_hippo_eigenvalues(N):
    """Lambda's initial value, (N,) complex128: the N eigenvalues of largest imaginary part of the skew-symmetric
    part of HiPPO-LegS of size 2N, shifted by -0.5 (the public code's `hippo_skew_evals(2 N)[:N] - 0.5`)."""
    x = 2 * torch.arange(2 * N, dtype=torch.float64) + 1
    hippo = (x[:, None] * x[None, :]).sqrt().tril(diagonal=-1)  # (2N, 2N)
    eigenvalues = torch.linalg.eigvals((hippo - hippo.T) / 2)  # purely imaginary, in +- pairs
    return eigenvalues[eigenvalues.imag.argsort(descending=True)][:N] - 0.5


class DeltaDSS(DSS):
    """GSS's DSS mixer with a learned per-channel step Delta = exp(log_dt) (H,) and the skew-HiPPO initialisation:
    Lambda_real = log 0.5 (Re Lambda = -0.5), Lambda_imag = Im Lambda (its log with lambda_imag_exp)."""

    def __init__(self, *, dim, kernel_N=64, lambda_imag_exp=False, device=None, dtype=None):
        super().__init__(
            dim=dim, kernel_N=kernel_N, dss_kernel_lambda_imag_exp=lambda_imag_exp, device=device, dtype=dtype
        )
        log_dt = torch.empty(dim, device=device, dtype=dtype).uniform_(math.log(DELTA_MIN), math.log(DELTA_MAX))
        self.log_dt = nn.Parameter(log_dt)
        imag = skew_hippo_eigenvalues(kernel_N).imag  # > 0
        with torch.no_grad():
            self.Lambda_real.fill_(math.log(0.5))
            self.Lambda_imag.copy_(imag.log() if lambda_imag_exp else imag)

    def delta(self):
        return self.log_dt.exp()


class DSSLayer(MLPBlock):
    """The DSS block: x + W_o GELU(DSS(x)) (W_o dim -> dim, biased), then x + MLP(norm(x))."""

    def __init__(self, *, dim, kernel_N=64, lambda_imag_exp=False, mlp_ratio=4, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.dim = dim
        self.dss = DeltaDSS(dim=dim, kernel_N=kernel_N, lambda_imag_exp=lambda_imag_exp, **factory)
        self.to_out = nn.Linear(dim, dim, **factory)
        self.add_mlp(dim, mlp_ratio, factory)

    def forward(self, x):
        return self._out(x, self.dss(x))

    def _out(self, x, y):
        """From the DSS output y: GELU, W_o, the residual, then the MLP sub-block; per position, so x and y
        are (B, L, dim) or one position (B, dim)."""
        with record_function("projection"):
            x = x + self.to_out(F.gelu(y))
        return self.mlp_residual(x)

    def init_state(self, batch, *, max_len=None, device=None, dtype=None):
        """The DSS recurrence's state for an empty prefix, s = 0 (B, dim, N) complex (the rest keeps none)."""
        return self.dss.init_state(batch, max_len=max_len, device=device, dtype=dtype)

    def step(self, x_t, state):
        """One position x_t (B, dim) -> (y_t (B, dim), state); the state is advanced in place and returned."""
        y_t, state = self.dss.step(x_t, state)
        return self._out(x_t, y_t), state

    def prefill(self, x, *, max_len=None):
        """forward(x) for a prompt x (B, L, dim) and the DSS state after it."""
        y, state = self.dss.prefill(x, max_len=max_len)
        return self._out(x, y), state

    def flops(self, batch, seq_len):
        tokens = batch * seq_len
        return self.dss.flops(batch, seq_len) + matmul_flops(tokens, self.dim, self.dim) + self.mlp_flops(tokens)


def dss_layer_ref(layer, x):
    """Reference for DSSLayer.forward: its DSS replaced by the float64 recurrence (gss.dss_ref)."""
    return layer._out(x, dss_ref(layer.dss, x))
