"""Comparing a fast path with its slow reference (mamba's habit): outputs, input gradients and parameter
gradients, each at the tolerance of its dtype from one table, the largest difference printed first."""

import torch

import models

SMALL = {  # tiny but non-trivial options per model, so every test runs in milliseconds
    "gss": dict(kernel_N=8, kernel_H=12),
    "gss-fast": dict(kernel_N=8, kernel_H=12),
    "gss-direct": dict(kernel_N=8, kernel_H=12),
    "conv": dict(kernel_H=12, conv_kernel=5),
    "attention": dict(head_dim=8),
    "dss": dict(kernel_N=8),
    "attention-chunked": dict(head_dim=8, chunk=8),
}
LM_SMALL = {**SMALL, "gss-hybrid": dict(kernel_N=8, kernel_H=12, head_dim=8, chunk=8, hybrid_every=2)}  # LM_NAMES
DIM, VOCAB = 16, 20
DTYPES = [torch.float64, torch.float32]  # the dtypes fast paths are compared in, against float64

# A result computed in a dtype against its reference (float64, or float32 for the float16/bfloat16 parameters):
# elementwise |result - reference| <= atol + rtol * |reference|, by the result's dtype. How close the tests come
# to it is in docs/models.md ("Fast paths and their references").
TOLERANCES = {
    torch.float64: dict(atol=1e-12, rtol=1e-10),
    torch.float32: dict(atol=1e-4, rtol=1e-4),
    torch.float16: dict(atol=1e-2, rtol=5e-3),
    torch.bfloat16: dict(atol=5e-2, rtol=2e-2),
}


def small_layer(name, dtype=torch.float64, seed=0, **options):
    """A registered layer at SMALL's options (and `options`), seeded."""
    torch.manual_seed(seed)
    return models.build_layer(name, dim=DIM, dtype=dtype, **{**LM_SMALL[name], **options})


def small_lm(name, dtype=torch.float64, seed=0, depth=2):
    """An LM of `depth` layers (any of models.LM_NAMES) at LM_SMALL's options, seeded."""
    torch.manual_seed(seed)
    return models.build_lm(name, num_tokens=VOCAB, dim=DIM, depth=depth, dtype=dtype, **LM_SMALL[name])


def assert_close(actual, expected, what):
    """`actual` against its reference `expected` (any dtype), at the tolerance of actual's dtype; the largest
    difference is printed first (pytest shows it on failure, like mamba's tests)."""
    tolerance = TOLERANCES[actual.dtype]
    actual, expected = actual.double(), expected.double()
    print(
        f"{what}: max abs difference {(actual - expected).abs().max().item():.3e} "
        f"(max |reference| {expected.abs().max().item():.3e})"
    )
    torch.testing.assert_close(actual, expected, **tolerance)


def output_and_grads(output, inputs):
    """{"output": output, "grad <name>": gradient of <output, W> for each named input}. W is one fixed random tensor,
    the same for every path compared, so that every element of the output reaches the gradients."""
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grads = torch.autograd.grad((output * weights.to(output.dtype)).sum(), list(inputs.values()))
    return {"output": output, **{f"grad {name}": grad for name, grad in zip(inputs, grads, strict=True)}}


def layer_output_and_grads(forward, layer, x):
    """forward(layer, x) and its gradients with respect to x and every parameter of the layer."""
    x = x.detach().clone().requires_grad_()
    return output_and_grads(forward(layer, x), {"x": x, **dict(layer.named_parameters())})


def layer_forward(layer, x):
    return layer(x)


def assert_paths_agree(fast, reference, what):
    assert fast.keys() == reference.keys()
    for key, expected in reference.items():
        assert_close(fast[key], expected, f"{what} {key}")
