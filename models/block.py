"""The gated unit that GSS (gss.py) and the gated CNN (conv.py) share: GSS Pseudocode 3.2 around a token mixer.

A subclass names its mixer, a module over H channels with `forward`, `init_state`, `step`, `prefill` and
`flops`; everything else (the norm, the u and v projections, the gate, the output projection, the residual)
is here, so an ablation of one mixer against another changes the mixer only.
"""

from torch import nn
from torch.profiler import record_function

from .ops import check_sequence, check_token, layer_min_bytes, matmul_flops


class NormedMixer(nn.Module):
    """Base of the mixers GatedUnit wraps (the DSS, the learned convolution): each normalises its input first,
    as the seed's DSS does (see GatedUnit.mix). `_forward(x)` returns (y, u), u the normalised input, which
    prefill needs too; forward is y alone."""

    def forward(self, x):
        return self._forward(x)[0]

    def normed(self, x):
        """u = norm(x) (B, L, H), after checking x's shape."""
        check_sequence(x, self.dim)
        with record_function("norm"):
            return self.norm(x)


class GatedUnit(nn.Module):
    """GSS Pseudocode 3.2 with the token mixer left to the subclass: norm, u = GELU(W_u x),
    v = GELU(W_v x), mix v over time, out = W_o((W_g mixed) * u) + x."""

    def __init__(self, *, dim, dim_expansion_factor, hidden_H, reverse_seq, device, dtype):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.dim, self.reverse_seq = dim, reverse_seq
        self.dim_hidden, self.hidden_H = int(dim_expansion_factor * dim), hidden_H
        if self.dim_hidden < 1:
            raise ValueError(f"dim_expansion_factor * dim must be at least 1, got {dim_expansion_factor} * {dim}")
        self.norm = nn.LayerNorm(dim, **factory)
        self.to_u = nn.Sequential(nn.Linear(dim, self.dim_hidden, bias=False, **factory), nn.GELU())
        self.to_v = nn.Sequential(nn.Linear(dim, hidden_H, bias=False, **factory), nn.GELU())
        self.to_gate = nn.Linear(hidden_H, self.dim_hidden, bias=False, **factory)
        self.to_out = nn.Linear(self.dim_hidden, dim, **factory)

    @property
    def mixer(self):
        """The token mixer module, which carries `init_state`, `step` and `prefill` over H channels."""
        raise NotImplementedError

    # v is normalised twice: by self.norm (x, before both projections) and again by the mixer's own LayerNorm
    # over H (DSS.norm; LearnedConv.norm likewise), whose output feeds both its convolution and its D residual.
    # The reference does the same: gated-state-spaces-pytorch 0.1.0's GSS.forward calls self.norm(x), and its
    # DSS.forward starts with u = self.norm(x) on v = GELU(W_v norm(x)). The second norm is not a no-op (it re-centres
    # and re-scales GELU's output, with its own weight and bias), and removing it would drop dss.norm.weight and
    # dss.norm.bias from the state_dict: checkpoints of either implementation would no longer load into the
    # other with strict=True, and the outputs would change.
    def mix(self, v):
        return self.mixer(v)

    def mix_flops(self, batch, seq_len):
        return self.mixer.flops(batch, seq_len)

    def forward(self, x):
        check_sequence(x, self.dim)
        if self.reverse_seq:
            x = x.flip(1)
        u, v = self._project(x)
        out = self._gate(self.mix(v), u, x)
        return out.flip(1) if self.reverse_seq else out

    def _project(self, x):
        with record_function("norm"):
            h = self.norm(x)
        with record_function("projection"):
            return self.to_u(h), self.to_v(h)  # (..., E), (..., H)

    def _gate(self, mixed, u, residual):
        with record_function("projection"):
            return self.to_out(self.to_gate(mixed) * u) + residual

    def _require_causal(self):
        if self.reverse_seq:
            raise ValueError("a reverse_seq layer reads the sequence backwards and cannot be stepped causally")

    def init_state(self, batch, *, max_len=None, device=None, dtype=None):
        """The mixer's state for an empty prefix (the projections and gate keep none)."""
        self._require_causal()
        return self.mixer.init_state(batch, max_len=max_len, device=device, dtype=dtype)

    def step(self, x_t, state):
        """Pseudocode 3.2 on one position x_t (B, dim): norm, u, v, mixer step, gate, out, residual."""
        self._require_causal()
        check_token(x_t, self.dim)
        u, v = self._project(x_t)
        mixed, state = self.mixer.step(v, state)
        return self._gate(mixed, u, x_t), state

    def prefill(self, x, *, max_len=None):
        """forward(x) for a prompt x (B, L, dim) and the mixer's state after it."""
        self._require_causal()
        check_sequence(x, self.dim)
        u, v = self._project(x)
        mixed, state = self.mixer.prefill(v, max_len=max_len)
        return self._gate(mixed, u, x), state

    def flops(self, batch, seq_len):
        tokens, d, e, h = batch * seq_len, self.dim, self.dim_hidden, self.hidden_H
        projections = matmul_flops(tokens, e, d) + matmul_flops(tokens, h, d)
        projections += matmul_flops(tokens, e, h) + matmul_flops(tokens, d, e)
        return projections + self.mix_flops(batch, seq_len)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def min_bytes(self, batch, seq_len, mode):
        """The bytes a step must move at least: input, parameters and output, and their gradients for fwdbwd
        (models.ops.layer_min_bytes)."""
        return layer_min_bytes(batch, seq_len, self.dim, self.num_params(), mode)
