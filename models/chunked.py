"""Chunked causal attention, the local attention of the GSS paper's hybrid: attention.py's block (pre-norm, rotary,
4x MLP, the same parameters) with every query attending only to the keys of its own chunk of `chunk` tokens
(non-overlapping chunks, causal inside each).

Rotary positions restart at 0 in every chunk (positions within the chunk, not absolute ones): a chunk is
computed exactly as the plain block computes that chunk alone, and stepping restarts the positions with the
cache. The chunks are folded into the batch for one SDPA call; a length that is not a multiple of `chunk` is
zero-padded at the end, after the last real position of the last chunk, where causal attention never reads
it. A sequence no longer than `chunk` is one chunk, unpadded. The attention core costs 4 B ceil(L / c) c^2 d / 2
for chunks of c = min(chunk, L) tokens: linear in L. Decoding keeps a KV cache of at most `chunk` positions,
emptied when a new chunk starts.
"""

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from .attention import AttentionBlock, attention_ref, rotary
from .ops import check_sequence


def fold(t, c, n):
    """(B, heads, L, hd) -> (B n, heads, c, hd): zero-padded at the end to n c positions, chunks into the batch."""
    return F.pad(t, (0, 0, 0, n * c - t.shape[2])).unflatten(2, (n, c)).transpose(1, 2).flatten(0, 1)


def unfold(t, batch, seq_len):
    """fold's inverse, the padding dropped: (B n, heads, c, hd) -> (B, heads, L, hd)."""
    return t.unflatten(0, (batch, -1)).transpose(1, 2).flatten(2, 3)[:, :, :seq_len]


class ChunkedAttentionBlock(AttentionBlock):
    def __init__(self, *, dim, chunk=512, heads=None, head_dim=None, mlp_ratio=4, device=None, dtype=None):
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
            raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
        super().__init__(dim=dim, heads=heads, head_dim=head_dim, mlp_ratio=mlp_ratio, device=device, dtype=dtype)
        self.chunk = chunk

    def chunking(self, seq_len):
        """(c, n): chunks of c = min(chunk, seq_len) tokens, n of them (the last one padded to c)."""
        c = min(self.chunk, seq_len)
        return c, -(-seq_len // c)

    def _forward(self, x):
        """The block's output (B, L, dim) and the rotary-applied keys and values of the last chunk
        (B, heads, t, hd), t = L - (n - 1) c: what the KV cache holds after x."""
        check_sequence(x, self.dim)
        B, L, _ = x.shape
        c, n = self.chunking(L)
        q, k, v = (fold(t, c, n) for t in self._project_qkv(x))  # (B n, heads, c, hd) each
        with record_function("attention"):
            q, k = rotary(q), rotary(k)  # positions 0, ..., c - 1 in every chunk
            h = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        last = L - (n - 1) * c
        k, v = (t.unflatten(0, (B, n))[:, -1, :, :last] for t in (k, v))
        return self._out(x, unfold(h, B, L)), k, v

    def init_state(self, batch, *, max_len=None, device=None, dtype=None):
        """An empty KV cache, preallocated to min(max_len, chunk) positions, that never holds more than chunk."""
        state = super().init_state(batch, max_len=min(max_len or 0, self.chunk), device=device, dtype=dtype)
        state.limit = self.chunk
        return state

    def step(self, x_t, state):
        """The plain block's step at position state.length of the current chunk; a full cache means the chunk
        has ended, and it is emptied first, so that a new chunk's queries see only their own chunk."""
        if state.length == self.chunk:
            state.length = 0
        return super().step(x_t, state)

    def core_flops(self, batch, seq_len):
        """Causal attention within each of the n chunks of c tokens (padding included), as B n sequences of c."""
        c, n = self.chunking(seq_len)
        return super().core_flops(batch * n, c)


def chunked_attention_block_ref(block, x):
    """Reference for ChunkedAttentionBlock.forward: the plain block's projections and attention_ref on every chunk
    of x on its own (no padding, no folding), rotary from 0 in each chunk, the chunks' outputs concatenated."""
    outputs = []
    for start in range(0, x.shape[1], block.chunk):
        x_c = x[:, start : start + block.chunk]
        q, k, v = block._qkv(x_c, start=0)
        outputs.append(block._out(x_c, attention_ref(q, k, v)))
    return torch.cat(outputs, dim=1)
