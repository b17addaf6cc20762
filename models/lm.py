"""The one language-model wrapper: embedding -> `depth` layers -> logits, the shape of GatedStateSpacesLM.

Every registered layer is wrapped by this class; there is deliberately no final norm, because the
reference GSS LM has none and an extra one only for the baselines would make the comparison unfair.

Decoding: `prefill` a prompt, then `step` one token at a time through every layer's state (the DSS
recurrence, a convolution buffer or a KV cache); `generate` compares that with re-running `forward`.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from .ops import matmul_flops

# "kv_cache" names the same step path as "recurrent" (what it is called for attention); both work for every model.
GENERATE_METHODS = ("recurrent", "kv_cache", "reforward")


class LM(nn.Module):
    """`make_layer()` builds every layer alike; `make_layer_at(i)` builds layer i (a hybrid's mix), instead."""

    def __init__(self, *, num_tokens, dim, depth, make_layer=None, make_layer_at=None, device=None, dtype=None):
        super().__init__()
        if num_tokens <= 0 or depth <= 0:
            raise ValueError(f"num_tokens and depth must be positive, got {num_tokens} and {depth}")
        if (make_layer is None) == (make_layer_at is None):
            raise ValueError("give exactly one of make_layer and make_layer_at")
        self.num_tokens, self.dim = num_tokens, dim
        self.token_emb = nn.Embedding(num_tokens, dim, device=device, dtype=dtype)
        self.layers = nn.ModuleList([make_layer_at(i) if make_layer is None else make_layer() for i in range(depth)])
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

    def init_state(self, batch, *, max_len=None, device=None, dtype=None):
        """One state per layer for an empty prefix (a list; see `models.state_nbytes` for its size)."""
        return [layer.init_state(batch, max_len=max_len, device=device, dtype=dtype) for layer in self.layers]

    def step(self, token_t, state):
        """token_t (B,) int at the next position -> (logits_t (B, num_tokens), state), state advanced in place."""
        if token_t.ndim != 1:
            raise ValueError(f"expected one token per sequence, shape (batch,), got {tuple(token_t.shape)}")
        x = self.token_emb(token_t)  # (B, dim)
        for i, layer in enumerate(self.layers):
            x, state[i] = layer.step(x, state[i])
        with record_function("projection"):
            return self.to_logits(x), state

    def prefill(self, ids, *, max_len=None):
        """ids (B, L) -> (logits (B, L, num_tokens), state after the prompt), each layer in one parallel pass."""
        if ids.ndim != 2:
            raise ValueError(f"expected token ids of shape (batch, seq_len), got {tuple(ids.shape)}")
        x, state = self.token_emb(ids), []
        for layer in self.layers:
            x, layer_state = layer.prefill(x, max_len=max_len)
            state.append(layer_state)
        with record_function("projection"):
            return self.to_logits(x), state

    @torch.inference_mode()
    def generate(self, prompt_ids, new_tokens, *, method="recurrent", temperature=0.0, seed=None):
        """prompt_ids (B, L) -> ids (B, L + new_tokens).

        method: "recurrent" (alias "kv_cache") prefills the prompt, then steps once per new token;
        "reforward" re-runs forward over the whole sequence for every new token, as the original
        implementation's sampling loop does. temperature 0 is greedy; above 0, each new token is one
        torch.multinomial draw from softmax(logits / temperature) with a generator seeded by `seed`
        (the global one when seed is None), so both methods draw the same random sequence.
        """
        if method not in GENERATE_METHODS:
            raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(GENERATE_METHODS)}")
        if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 0:
            raise ValueError(f"new_tokens must be a non-negative integer, got {new_tokens!r}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if prompt_ids.ndim != 2 or prompt_ids.shape[1] < 1:
            raise ValueError(f"expected a prompt of shape (batch, seq_len >= 1), got {tuple(prompt_ids.shape)}")
        generator = None
        if temperature > 0 and seed is not None:
            generator = torch.Generator(device=prompt_ids.device).manual_seed(seed)

        def pick(logits):  # (B, V) -> (B,)
            if temperature == 0:
                return logits.argmax(-1)
            probs = F.softmax(logits / temperature, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
            return torch.multinomial(probs, 1, generator=generator)[:, 0]

        ids = [prompt_ids]
        if method == "reforward":
            for _ in range(new_tokens):
                ids.append(pick(self(torch.cat(ids, dim=1))[:, -1])[:, None])
            return torch.cat(ids, dim=1)
        if new_tokens == 0:
            return prompt_ids.clone()
        logits, state = self.prefill(prompt_ids, max_len=prompt_ids.shape[1] + new_tokens)
        token = pick(logits[:, -1])
        ids.append(token[:, None])
        for _ in range(new_tokens - 1):
            logits, state = self.step(token, state)
            token = pick(logits)
            ids.append(token[:, None])
        return torch.cat(ids, dim=1)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def flops(self, batch, seq_len):
        """Forward FLOPs: the layers plus the logits projection (the embedding is a lookup)."""
        layers = sum(layer.flops(batch, seq_len) for layer in self.layers)
        return layers + matmul_flops(batch * seq_len, self.num_tokens, self.dim)
