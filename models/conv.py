"""The gated-CNN baseline: GSS with its DSS replaced by a learned causal depthwise convolution.

Everything around the mixer (projections, gating, the norm and D-residual inside the mixer) is the
GSS layer's, so an ablation against `gss` isolates the state-space kernel from the gating. Decoding
keeps the last conv_kernel normalised inputs (B, conv_kernel, H), a state of fixed size like GSS's.
"""

import math

import torch
from torch import nn

from .block import GatedUnit, NormedMixer
from .ops import ConvState, check_token, direct_conv, direct_conv_flops


class LearnedConv(NormedMixer):
    """y = causal_conv(norm(x), W) + norm(x) * D with W of shape (conv_kernel, H), one filter per channel."""

    def __init__(self, *, dim, conv_kernel=64, device=None, dtype=None):
        super().__init__()
        if isinstance(conv_kernel, bool) or not isinstance(conv_kernel, int) or conv_kernel <= 0:
            raise ValueError(f"conv_kernel must be a positive integer, got {conv_kernel!r}")
        factory = dict(device=device, dtype=dtype)
        self.dim, self.conv_kernel = dim, conv_kernel
        self.norm = nn.LayerNorm(dim, **factory)
        # conv1d's default init scale for a depthwise filter of conv_kernel taps
        bound = 1 / math.sqrt(conv_kernel)
        self.weight = nn.Parameter(torch.empty(conv_kernel, dim, **factory).uniform_(-bound, bound))
        self.param_D = nn.Parameter(torch.randn(dim, **factory))

    def taps(self, seq_len):
        """Taps beyond the sequence only ever meet padding, so they are not run."""
        return min(self.conv_kernel, seq_len)

    def _forward(self, x):
        """y (B, L, H) and the normalised input u (B, L, H)."""
        u = self.normed(x)
        return direct_conv(u, self.weight[: self.taps(x.shape[1])]) + u * self.param_D, u

    def init_state(self, batch, *, max_len=None, device=None, dtype=None):
        """The last conv_kernel normalised inputs, zeros for an empty prefix (B, conv_kernel, H)."""
        return ConvState.empty(self.weight, batch, device=device, dtype=dtype)

    def step(self, x_t, state):
        """One position x_t (B, H) -> (y_t (B, H), state); the state is advanced in place and returned."""
        check_token(x_t, self.dim)
        u = self.norm(x_t)
        return state.step(u) + u * self.param_D, state

    def prefill(self, x, *, max_len=None):
        """forward(x) for a prompt x (B, L, H) and the state after it (its last conv_kernel normalised inputs)."""
        y, u = self._forward(x)
        return y, ConvState.after(u, self.weight)

    def flops(self, batch, seq_len):
        return direct_conv_flops(batch, seq_len, self.dim, self.taps(seq_len))


class GatedConv(GatedUnit):
    def __init__(
        self, *, dim, dim_expansion_factor=4, kernel_H=256, conv_kernel=64, reverse_seq=False, device=None, dtype=None
    ):
        super().__init__(
            dim=dim,
            dim_expansion_factor=dim_expansion_factor,
            hidden_H=kernel_H,
            reverse_seq=reverse_seq,
            device=device,
            dtype=dtype,
        )
        self.conv = LearnedConv(dim=kernel_H, conv_kernel=conv_kernel, device=device, dtype=dtype)

    @property
    def mixer(self):
        return self.conv
