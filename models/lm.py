"""The one language-model wrapper: embedding -> `depth` layers -> logits, the shape of GatedStateSpacesLM.

Every registered layer is wrapped by this class; there is deliberately no final norm, because the
reference GSS LM has none and an extra one only for the baselines would make the comparison unfair.
"""

import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from .ops import matmul_flops


class LM(nn.Module):
    def __init__(self, *, num_tokens, dim, depth, make_layer, device=None, dtype=None):
        super().__init__()
        if num_tokens <= 0 or depth <= 0:
            raise ValueError(f"num_tokens and depth must be positive, got {num_tokens} and {depth}")
        self.num_tokens, self.dim = num_tokens, dim
        self.token_emb = nn.Embedding(num_tokens, dim, device=device, dtype=dtype)
        self.layers = nn.ModuleList([make_layer() for _ in range(depth)])
        self.to_logits = nn.Linear(dim, num_tokens, bias=False, device=device, dtype=dtype)

    def forward(self, ids, labels=None):
        """ids (B, L) int -> logits (B, L, num_tokens); with labels (B, L), the mean cross-entropy in nats."""
        x = self.token_emb(ids)
        for layer in self.layers:
            x = layer(x)
        with record_function("projection"):
            logits = self.to_logits(x)
        if labels is None:
            return logits
        return F.cross_entropy(logits.transpose(1, 2), labels)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def flops(self, batch, seq_len):
        """Forward FLOPs: the layers plus the logits projection (the embedding is a lookup)."""
        layers = sum(layer.flops(batch, seq_len) for layer in self.layers)
        return layers + matmul_flops(batch * seq_len, self.num_tokens, self.dim)
