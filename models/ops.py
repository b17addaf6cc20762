"""Causal depthwise convolutions shared by the mixers, their input checks, and the FLOP convention.

Every convolution here maps u (B, L, H) with a kernel K (T, H) to y (B, L, H) with
y[b, t, h] = sum_{k < min(T, t + 1)} K[k, h] * u[b, t - k, h]  (causal, one filter per channel).

FLOP convention (the same one bench/core/flops.py counts with): matrix products 2*m*n*k, complex ones
8*m*n*k, a real FFT of length n 2.5*n*log2(n), convolutions as executed (2*B*H*L*T for T taps),
elementwise ops not counted.

Minimum bytes (a layer's `min_bytes`, the memory side of its roofline): what a step must move at the least, each
tensor once: the input (B, L, dim), the parameters and the output (B, L, dim) in the forward; for fwdbwd also
their gradients (the output's gradient read, the input's and the parameters' written), so twice the forward's.
Activations kept for the backward, a kernel materialised or cached, workspaces: none of it counted (a better
implementation might avoid it). Float32 storage, as every cell holds them: autocast casts copies.

Incremental decoding shares the state helpers here: a `ConvState` (the last T inputs) steps any of
these convolutions one position at a time, and `state_nbytes` sizes any layer's or LM's state.
`causal_conv_ref` is the slow reference both fast convolutions are tested against.
"""

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.fft import irfft, rfft
from torch.profiler import record_function


def check_sequence(x, dim):
    """Validate a (B, L, dim) layer input; a user error gets a ValueError, not a shape crash deep inside."""
    if x.ndim != 3:
        raise ValueError(f"expected input of shape (batch, seq_len, dim), got {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError("empty sequence: seq_len must be at least 1")
    if x.shape[2] != dim:
        raise ValueError(f"expected last dimension {dim}, got {x.shape[2]}")


def check_token(x_t, dim):
    """Validate one position (B, dim) given to a layer's `step`."""
    if x_t.ndim != 2 or x_t.shape[1] != dim:
        raise ValueError(f"expected one position of shape (batch, {dim}), got {tuple(x_t.shape)}")


# Marks a state field that is the same for every sequence (a kernel, not per-sequence memory):
# state_nbytes leaves it out, so a state's size is what decoding one more sequence costs.
CONSTANT = {"constant": True}


def state_nbytes(state):
    """Bytes of the per-sequence tensors in a decoding state (a dataclass, dict, list or tuple of them)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if dataclasses.is_dataclass(state):
        return sum(
            state_nbytes(getattr(state, f.name)) for f in dataclasses.fields(state) if not f.metadata.get("constant")
        )
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0


@dataclass
class ConvState:
    """Decoding state of a causal depthwise convolution of T taps.

    inputs (B, T, H): the last T inputs, oldest first, zeros before the sequence starts;
    weight (T, H): the taps aligned with `inputs`, i.e. the kernel K flipped in time (a constant).
    """

    inputs: torch.Tensor
    weight: torch.Tensor = field(metadata=CONSTANT)

    @classmethod
    def empty(cls, K, batch, *, device=None, dtype=None):
        dtype = dtype or K.dtype
        inputs = torch.zeros(batch, K.shape[0], K.shape[1], device=device or K.device, dtype=dtype)
        return cls(inputs, K.flip(0).to(device=inputs.device, dtype=dtype))

    @classmethod
    def after(cls, u, K):
        """The state after the inputs u (B, L, H) of a prompt: their last T, zero-padded on the left."""
        state = cls.empty(K, u.shape[0], device=u.device, dtype=u.dtype)
        n = min(K.shape[0], u.shape[1])
        state.inputs[:, -n:] = u[:, -n:]
        return state

    def step(self, u_t):
        """Push u_t (B, H) and return y_t (B, H) = sum_k K[k] u_{t-k}, as direct_conv at that position."""
        self.inputs = torch.cat((self.inputs[:, 1:], u_t[:, None].to(self.inputs.dtype)), dim=1)  # (B, T, H)
        return torch.einsum("bth,th->bh", self.inputs, self.weight)


def fft_conv(u, K):
    """Causal convolution by FFT, zero-padded to 2L so the circular convolution does not wrap (O(L log L))."""
    with record_function("fft_conv"):
        L = u.shape[-2]
        n = 2 * L
        u_f = rfft(u, n=n, dim=-2)  # (B, L + 1, H) complex
        K_f = rfft(K, n=n, dim=-2)  # (L + 1, H) complex
        return irfft(u_f * K_f, n=n, dim=-2)[..., :L, :]


def direct_conv(u, K):
    """Causal convolution in the time domain: depthwise conv1d with T - 1 zeros of left padding (O(L T))."""
    with record_function("direct_conv"):
        T, H = K.shape
        weight = K.flip(0).t().unsqueeze(1).to(u.dtype)  # (H, 1, T): conv1d correlates, so flip the taps
        y = F.conv1d(F.pad(u.transpose(1, 2), (T - 1, 0)), weight, groups=H)  # (B, H, L)
        return y.transpose(1, 2)


def causal_conv_ref(u, K):
    """Reference for fft_conv and direct_conv: the sum in this module's docstring written out, one tap at a time,
    y[:, t] = sum_k K[k] * u[:, t - k] (no FFT, no conv1d; O(B L H T)). u (B, L, H), K (T, H) -> (B, L, H)."""
    L = u.shape[-2]
    delayed = (F.pad(u, (0, 0, k, 0))[..., :L, :] for k in range(min(K.shape[0], L)))  # u delayed by k positions
    return sum(K[k] * u_k for k, u_k in enumerate(delayed))


def layer_min_bytes(batch, seq_len, dim, params, mode, *, itemsize=4):
    """The bytes a layer step of `mode` ("fwd" or "fwdbwd") must move at the least (this module's docstring)."""
    if mode not in ("fwd", "fwdbwd"):
        raise ValueError(f"mode must be fwd or fwdbwd, got {mode!r}")
    forward = (2 * batch * seq_len * dim + params) * itemsize  # input and output once, the parameters once
    return forward * (2 if mode == "fwdbwd" else 1)


def matmul_flops(m, n, k, *, complex_=False):
    return (8 if complex_ else 2) * m * n * k


def rfft_flops(n, *, count=1):
    """A real FFT (or its inverse) of length n: 2.5 n log2 n, the convention of FFT benchmarks."""
    return 2.5 * n * math.log2(n) * count if n > 1 else 0.0


def fft_conv_flops(batch, seq_len, channels):
    """rfft of the input and of the kernel, irfft of the product, all of length 2L."""
    n = 2 * seq_len
    return rfft_flops(n, count=2 * batch * channels + channels)


def direct_conv_flops(batch, seq_len, channels, taps):
    return 2 * batch * channels * seq_len * taps
