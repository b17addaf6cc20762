"""The attention baseline: a pre-norm causal Transformer block with rotary position embedding.

Attention runs through F.scaled_dot_product_attention(is_causal=True), which dispatches to the flash
kernels on GPU and to the fused flash kernel on CPU, so the baseline is what a practitioner would use.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from .ops import check_sequence, matmul_flops


def resolve_heads(dim, heads=None, head_dim=None):
    """Number of heads from `heads` or `head_dim` (default: heads of 64 channels, at least one)."""
    if heads is None and head_dim is None:
        heads = max(1, dim // 64)
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


def rotary(x, base=10000.0):
    """Rotary position embedding (Su et al. 2021), rotate-half form, on x of shape (B, heads, L, head_dim)."""
    L, d = x.shape[-2], x.shape[-1]
    inv_freq = base ** -(torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # (d/2,)
    angles = torch.arange(L, device=x.device, dtype=torch.float32)[:, None] * inv_freq  # (L, d/2)
    cos = torch.cat((angles.cos(), angles.cos()), dim=-1).to(x.dtype)
    sin = torch.cat((angles.sin(), angles.sin()), dim=-1).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class AttentionBlock(nn.Module):
    def __init__(self, *, dim, heads=None, head_dim=None, mlp_ratio=4, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.dim, self.heads = dim, resolve_heads(dim, heads, head_dim)
        self.dim_mlp = int(mlp_ratio * dim)
        self.norm_attn = nn.LayerNorm(dim, **factory)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False, **factory)
        self.to_out = nn.Linear(dim, dim, bias=False, **factory)
        self.norm_mlp = nn.LayerNorm(dim, **factory)
        self.mlp = nn.Sequential(nn.Linear(dim, self.dim_mlp, **factory), nn.GELU(),
                                 nn.Linear(self.dim_mlp, dim, **factory))

    def forward(self, x):
        check_sequence(x, self.dim)
        B, L, _ = x.shape
        with record_function("norm"):
            h = self.norm_attn(x)
        with record_function("projection"):
            qkv = self.to_qkv(h).view(B, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, heads, L, hd)
        with record_function("attention"):
            q, k, v = rotary(qkv[0]), rotary(qkv[1]), qkv[2]
            h = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h.transpose(1, 2).reshape(B, L, self.dim)
        with record_function("projection"):
            x = x + self.to_out(h)
        with record_function("norm"):
            h = self.norm_mlp(x)
        with record_function("projection"):
            return x + self.mlp(h)

    def flops(self, batch, seq_len):
        tokens, d = batch * seq_len, self.dim
        projections = matmul_flops(tokens, 3 * d, d) + matmul_flops(tokens, d, d)
        mlp = 2 * matmul_flops(tokens, self.dim_mlp, d)
        # QK^T and AV are 4 B L^2 d dense; causal attention counts half, as FlashAttention's benchmarks do.
        core = 4 * batch * seq_len * seq_len * d // 2
        return projections + mlp + core

    def num_params(self):
        return sum(p.numel() for p in self.parameters())
