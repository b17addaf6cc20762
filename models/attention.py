"""The attention baseline: a pre-norm causal Transformer block with rotary position embedding.

Attention runs through F.scaled_dot_product_attention(is_causal=True), which dispatches to the flash
kernels on GPU and to the fused flash kernel on CPU, so the baseline is what a practitioner would use.
Decoding keeps a KV cache (`KVCache`) that grows with every position, unlike the fixed GSS state.
`attention_ref` is the SDPA path's slow reference, softmax attention written out, for the tests.
`MLPBlock` is the Transformer's MLP sub-block, shared with the DSS layer (dss.py); chunked.py restricts the
attention to chunks.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from .ops import check_sequence, check_token, layer_min_bytes, matmul_flops


def default_head_dim(dim):
    """The default head width: the largest even divisor of dim that is at most min(64, dim // 4) (at least 2).
    Small models get several heads (4 of 16 at dim 64) instead of one as wide as the model; from dim 256 up,
    multiples of 64 keep 64-wide heads. Even because rotary embedding rotates channel pairs."""
    if dim % 2:
        raise ValueError(f"attention needs an even dim (rotary embedding), got dim={dim}")
    target = max(2, min(64, dim // 4))
    return max(w for w in range(2, target + 1, 2) if dim % w == 0)  # 2 always divides an even dim


def resolve_heads(dim, heads=None, head_dim=None):
    """Number of heads from `heads` or `head_dim`; with neither, heads of `default_head_dim(dim)` channels."""
    if heads is None and head_dim is None:
        heads = dim // default_head_dim(dim)
    elif heads is None:
        if head_dim <= 0 or dim % head_dim:
            raise ValueError(f"head_dim must be a positive divisor of dim={dim}, got {head_dim}")
        heads = dim // head_dim
    if heads <= 0 or dim % heads:
        raise ValueError(f"heads must be a positive divisor of dim={dim}, got {heads}")
    if head_dim is not None and heads * head_dim != dim:
        raise ValueError(f"heads * head_dim must equal dim={dim}, got {heads} * {head_dim}")
    if (dim // heads) % 2:
        raise ValueError(f"rotary embedding needs an even head_dim, got {dim // heads}")
    return heads


def rotary(x, base=10000.0, *, start=0):
    """Rotary position embedding (Su et al. 2021), rotate-half form, on x of shape (B, heads, L, head_dim)
    holding the absolute positions start, ..., start + L - 1."""
    L, d = x.shape[-2], x.shape[-1]
    inv_freq = base ** -(torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # (d/2,)
    positions = torch.arange(start, start + L, device=x.device, dtype=torch.float32)
    angles = positions[:, None] * inv_freq  # (L, d/2)
    cos = torch.cat((angles.cos(), angles.cos()), dim=-1).to(x.dtype)
    sin = torch.cat((angles.sin(), angles.sin()), dim=-1).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def attention_ref(q, k, v):
    """Reference for F.scaled_dot_product_attention(q, k, v, is_causal=True), written out: scores q k^T / sqrt(hd),
    each query masked from the keys after it, softmax over keys, weighted sum of the values.
    q, k, v (B, heads, L, hd) -> (B, heads, L, hd), in their dtype."""
    L, hd = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(hd)  # (B, heads, L, L): query i, key j
    future = torch.ones(L, L, dtype=torch.bool, device=q.device).triu(1)  # j > i
    scores = scores.masked_fill(future, float("-inf"))
    weights = (scores - scores.amax(dim=-1, keepdim=True)).exp()  # the diagonal is never masked: max is finite
    weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights @ v


@dataclass
class KVCache:
    """Rotary-applied keys and values of the positions seen so far, (B, heads, capacity, head_dim) each;
    the first `length` positions are filled, and the capacity doubles when a step needs more, up to `limit`
    positions when one is set (chunked attention, which empties a full cache)."""

    k: torch.Tensor
    v: torch.Tensor
    length: int = 0
    limit: int | None = None

    @property
    def keys(self):
        return self.k[:, :, : self.length]  # (B, heads, t, head_dim)

    @property
    def values(self):
        return self.v[:, :, : self.length]

    def append(self, k, v):
        """Write k, v (B, heads, n, head_dim) at positions length, ..., length + n - 1, in place."""
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            capacity = max(end, 2 * self.k.shape[2])
            if self.limit is not None:
                capacity = min(capacity, self.limit)
            self.k, self.v = (
                torch.cat((c, c.new_zeros(*c.shape[:2], capacity - c.shape[2], c.shape[3])), dim=2)
                for c in (self.k, self.v)
            )
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end


class MLPBlock(nn.Module):
    """Base of the blocks that end in the Transformer's MLP sub-block, x + W_2 GELU(W_1 LayerNorm(x)), with
    W_1 (dim -> mlp_ratio * dim) and W_2 biased. Parameters: norm_mlp, mlp."""

    def add_mlp(self, dim, mlp_ratio, factory):
        self.dim_mlp = int(mlp_ratio * dim)
        self.norm_mlp = nn.LayerNorm(dim, **factory)
        self.mlp = nn.Sequential(
            nn.Linear(dim, self.dim_mlp, **factory), nn.GELU(), nn.Linear(self.dim_mlp, dim, **factory)
        )

    def mlp_residual(self, x):
        """x (..., dim) -> x + MLP(norm(x)), per position."""
        with record_function("norm"):
            h = self.norm_mlp(x)
        with record_function("projection"):
            return x + self.mlp(h)

    def mlp_flops(self, tokens):
        return 2 * matmul_flops(tokens, self.dim_mlp, self.dim)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def min_bytes(self, batch, seq_len, mode):
        """The bytes a step must move at least: input, parameters and output, and their gradients for fwdbwd
        (models.ops.layer_min_bytes)."""
        return layer_min_bytes(batch, seq_len, self.dim, self.num_params(), mode)


class AttentionBlock(MLPBlock):
    def __init__(self, *, dim, heads=None, head_dim=None, mlp_ratio=4, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.dim, self.heads = dim, resolve_heads(dim, heads, head_dim)
        self.norm_attn = nn.LayerNorm(dim, **factory)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False, **factory)
        self.to_out = nn.Linear(dim, dim, bias=False, **factory)
        self.add_mlp(dim, mlp_ratio, factory)

    def forward(self, x):
        return self._forward(x)[0]

    def _forward(self, x):
        """The block's output (B, L, dim) and its rotary-applied keys and values (B, heads, L, hd)."""
        check_sequence(x, self.dim)
        q, k, v = self._qkv(x, start=0)
        with record_function("attention"):
            h = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self._out(x, h), k, v

    def _qkv(self, x, *, start):
        """q, k, v (B, heads, L, hd) of x (B, L, dim) at positions start, ..., with rotary on q and k."""
        q, k, v = self._project_qkv(x)
        with record_function("attention"):
            return rotary(q, start=start), rotary(k, start=start), v

    def _project_qkv(self, x):
        """q, k, v of x (B, L, dim) before rotary, stacked: (3, B, heads, L, hd)."""
        B, L, _ = x.shape
        with record_function("norm"):
            h = self.norm_attn(x)
        with record_function("projection"):
            return self.to_qkv(h).view(B, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)

    def _out(self, x, h):
        """Residual, then the MLP sub-block, from the attention output h (B, heads, L, hd)."""
        B, L, _ = x.shape
        h = h.transpose(1, 2).reshape(B, L, self.dim)
        with record_function("projection"):
            x = x + self.to_out(h)
        return self.mlp_residual(x)

    def init_state(self, batch, *, max_len=None, device=None, dtype=None):
        """An empty KV cache, preallocated to max_len positions when given (it grows past them if needed)."""
        w = self.to_qkv.weight
        shape = (batch, self.heads, max_len or 0, self.dim // self.heads)
        k = torch.zeros(shape, device=device or w.device, dtype=dtype or w.dtype)
        return KVCache(k, torch.zeros_like(k))

    def step(self, x_t, state):
        """One position x_t (B, dim) at position t = state.length -> (y_t (B, dim), state): rotary at t, then
        the single query attends over the whole cache, which needs no causal mask. The cache is filled in place."""
        check_token(x_t, self.dim)
        x = x_t[:, None]  # (B, 1, dim)
        q, k, v = self._qkv(x, start=state.length)
        state.append(k, v)
        with record_function("attention"):
            keys, values = state.keys, state.values
            h = F.scaled_dot_product_attention(q.to(keys.dtype), keys, values)  # (B, heads, 1, hd)
        return self._out(x, h.to(x.dtype))[:, 0], state

    def prefill(self, x, *, max_len=None):
        """forward(x) for a prompt x (B, L, dim) and its KV cache, preallocated to max(L, max_len) positions."""
        y, k, v = self._forward(x)
        state = self.init_state(k.shape[0], max_len=max(k.shape[2], max_len or 0), device=k.device, dtype=k.dtype)
        state.append(k, v)
        return y, state

    def flops(self, batch, seq_len):
        tokens, d = batch * seq_len, self.dim
        projections = matmul_flops(tokens, 3 * d, d) + matmul_flops(tokens, d, d)
        return projections + self.mlp_flops(tokens) + self.core_flops(batch, seq_len)

    def core_flops(self, batch, seq_len):
        """QK^T and AV, 4 B L^2 d dense; causal attention counts half, as FlashAttention's benchmarks do."""
        return 4 * batch * seq_len * seq_len * self.dim // 2
