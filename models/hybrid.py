"""gss-hybrid, the GSS paper's hybrid LM: GSS layers with a chunked-attention layer (chunked.py) among them.

The paper interleaves GSS layers with attention layers restricted to chunks (512 tokens at a training length of
4,096), but its public sources do not say where the attention layers sit: the placement here, every
`hybrid_every`-th layer (default 4, the attention last in each group), is this suite's choice.
models.build_lm("gss-hybrid", ...) builds it through the one LM wrapper (models/lm.py), each layer with its own
decoding state.
"""

HYBRID_LAYERS = ("gss", "attention-chunked")


def hybrid_layers(depth, hybrid_every):
    """The registry names of gss-hybrid's layers, bottom first: layers hybrid_every - 1, 2 hybrid_every - 1, ...
    are attention-chunked and the others gss; with depth < hybrid_every the last layer is attention-chunked.
    depth 4 -> gss, gss, gss, attention-chunked; depth 2 -> gss, attention-chunked."""

    def is_attention(i):
        return (i + 1) % hybrid_every == 0 or (depth < hybrid_every and i == depth - 1)

    return tuple(HYBRID_LAYERS[is_attention(i)] for i in range(depth))
