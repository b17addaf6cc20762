"""Incremental decoding against the full forward: step, prefill and generate, for every registered model."""

import pytest
import torch

import models
from models.attention import KVCache
from models.gss import RecurrentState
from models.ops import ConvState
from tests.compare import DIM, LM_SMALL, VOCAB, small_layer, small_lm

FLOAT32_RTOL = 1e-5  # per position: the residual stream dominates the output (margin: docs/models.md)


def step_through(layer, x, state):
    """Outputs (B, L, dim) of stepping `layer` over x (B, L, dim) from `state`, and the final state."""
    ys = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, dim=1), state


def max_rel_err(a, b):
    """The largest relative error over positions, each position's error relative to its own norm."""
    err = ((a - b).norm(dim=(0, 2)) / b.norm(dim=(0, 2))).max().item()
    print(f"max relative error over positions {err:.3e}")
    return err


def per_sequence_tensors(state):
    if isinstance(state, RecurrentState):
        return [state.s]
    if isinstance(state, ConvState):
        return [state.inputs]
    return [state.keys, state.values]


def test_every_registered_model_is_tested():
    assert set(LM_SMALL) == set(models.LM_NAMES)


# ---- a layer's step and prefill reproduce its forward ----


@pytest.mark.parametrize("name", models.NAMES)
@pytest.mark.parametrize("max_len", [None, 7])  # 7 < L: a preallocated KV cache has to grow
def test_step_matches_forward_float64(name, max_len):
    layer = small_layer(name)
    x = torch.randn(2, 40, DIM, dtype=torch.float64)
    with torch.no_grad():
        y, _ = step_through(layer, x, layer.init_state(2, max_len=max_len))
        assert max_rel_err(y, layer(x)) <= 1e-10


@pytest.mark.parametrize("name", models.NAMES)
def test_step_matches_forward_float32_at_length_2048(name):
    layer = small_layer(name, dtype=torch.float32)
    x = torch.randn(1, 2048, DIM)
    with torch.inference_mode():
        y, _ = step_through(layer, x, layer.init_state(1))
        assert max_rel_err(y, layer(x)) <= FLOAT32_RTOL


@pytest.mark.parametrize("name", models.NAMES)
@pytest.mark.parametrize("prompt_len", [1, 3, 23])  # 3 < conv_kernel = 5 < 23; 23 = 2 chunks of 8 + 7
def test_prefill_then_step_matches_forward(name, prompt_len):
    layer = small_layer(name)
    x = torch.randn(2, 40, DIM, dtype=torch.float64)
    with torch.no_grad():
        expected = layer(x)
        y_prompt, state = layer.prefill(x[:, :prompt_len])
        assert max_rel_err(y_prompt, expected[:, :prompt_len]) <= 1e-12
        y_rest, _ = step_through(layer, x[:, prompt_len:], state)
        assert max_rel_err(y_rest, expected[:, prompt_len:]) <= 1e-10


@pytest.mark.parametrize("name", models.NAMES)
def test_prefill_state_equals_the_stepped_state(name):
    layer = small_layer(name)
    x = torch.randn(2, 31, DIM, dtype=torch.float64)
    with torch.no_grad():
        _, prefilled = layer.prefill(x)
        _, stepped = step_through(layer, x, layer.init_state(2))
    for a, b in zip(per_sequence_tensors(prefilled), per_sequence_tensors(stepped), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-12


def test_gss_direct_with_few_taps_steps_as_a_convolution():
    layer = small_layer("gss-direct", conv_kernel=5)
    x = torch.randn(2, 30, DIM, dtype=torch.float64)
    with torch.no_grad():
        state = layer.init_state(2)
        assert isinstance(state, ConvState) and state.inputs.shape == (2, 5, 12)
        y, _ = step_through(layer, x, state)
        assert max_rel_err(y, layer(x)) <= 1e-10
        _, state = layer.prefill(x[:, :9])
        y_rest, _ = step_through(layer, x[:, 9:], state)
        assert max_rel_err(y_rest, layer(x)[:, 9:]) <= 1e-10


@pytest.mark.parametrize("dtype,complex_dtype", [(torch.float32, torch.complex64), (torch.float64, torch.complex128)])
def test_gss_state_is_complex_b_h_n_in_the_module_precision(dtype, complex_dtype):
    state = small_layer("gss", dtype=dtype).init_state(3)
    assert state.s.shape == (3, 12, 8) and state.s.dtype == complex_dtype
    assert models.state_nbytes(state) == 3 * 12 * 8 * state.s.element_size()


@pytest.mark.parametrize("name", models.NAMES)
def test_state_size_is_constant_for_gss_and_conv_and_grows_for_attention(name):
    layer = small_layer(name, dtype=torch.float32)
    with torch.no_grad():
        short = models.state_nbytes(layer.prefill(torch.randn(2, 10, DIM))[1])
        long = models.state_nbytes(layer.prefill(torch.randn(2, 500, DIM))[1])
    empty = models.state_nbytes(layer.init_state(2))
    if name == "attention":
        assert long == 50 * short == 2 * (2 * 500 * DIM * 4)  # K and V: B * L * heads * head_dim floats each
    elif name == "attention-chunked":  # the positions of the last chunk of 8: 10 = 8 + 2, 500 = 62 * 8 + 4
        assert 2 * short == long == 2 * (2 * 4 * DIM * 4) and empty == 0
    else:
        assert short == long == empty > 0


@pytest.mark.parametrize("max_len", [None, 3, 100])
def test_chunked_attention_steps_across_chunks_with_at_most_a_chunk_cached(max_len):
    layer = small_layer("attention-chunked", chunk=4)
    x = torch.randn(2, 11, DIM, dtype=torch.float64)
    with torch.no_grad():
        expected, state, ys = layer(x), layer.init_state(2, max_len=max_len), []
        for t in range(11):
            y, state = layer.step(x[:, t], state)
            ys.append(y)
            assert isinstance(state, KVCache) and state.length == t % 4 + 1 and state.k.shape[2] <= 4
            assert models.state_nbytes(state) <= 2 * (2 * 4 * DIM * 8)  # K and V of 4 positions, float64
        assert max_rel_err(torch.stack(ys, dim=1), expected) <= 1e-10
        for prompt_len in (4, 5, 8):
            y_prompt, state = layer.prefill(x[:, :prompt_len], max_len=max_len)
            assert state.length == (prompt_len - 1) % 4 + 1 and state.k.shape[2] <= 4
            y_rest, _ = step_through(layer, x[:, prompt_len:], state)
            assert max_rel_err(torch.cat((y_prompt, y_rest), dim=1), expected) <= 1e-10


def test_reverse_seq_layers_refuse_to_step():
    for layer in (
        models.GSS(dim=DIM, dss_kernel_N=4, dss_kernel_H=8, reverse_seq=True),
        models.GatedConv(dim=DIM, kernel_H=8, conv_kernel=3, reverse_seq=True),
    ):
        with pytest.raises(ValueError, match="reverse_seq"):
            layer.init_state(1)
        with pytest.raises(ValueError, match="reverse_seq"):
            layer.prefill(torch.randn(1, 4, DIM))
        with pytest.raises(ValueError, match="reverse_seq"):
            layer.step(torch.randn(1, DIM), None)


@pytest.mark.parametrize("name", models.NAMES)
def test_step_rejects_a_sequence(name):
    layer = small_layer(name)
    with pytest.raises(ValueError, match="one position"):
        layer.step(torch.randn(2, 3, DIM, dtype=torch.float64), layer.init_state(2))


# ---- the LM: step, prefill and generate ----


@pytest.mark.parametrize("name", models.LM_NAMES)
def test_lm_prefill_and_step_match_forward_logits(name):
    lm = small_lm(name)
    ids = torch.randint(0, VOCAB, (2, 30))
    with torch.no_grad():
        expected = lm(ids)
        logits, state = lm.prefill(ids[:, :12])
        assert max_rel_err(logits, expected[:, :12]) <= 1e-12
        stepped = [lm.step(ids[:, t], state)[0] for t in range(12, 30)]
        assert max_rel_err(torch.stack(stepped, dim=1), expected[:, 12:]) <= 1e-10
        state = lm.init_state(2)
        stepped = [lm.step(ids[:, t], state)[0] for t in range(30)]
        assert max_rel_err(torch.stack(stepped, dim=1), expected) <= 1e-10


@pytest.mark.parametrize("name", models.LM_NAMES)
def test_greedy_generation_is_the_same_by_stepping_and_by_reforwarding(name):
    lm = small_lm(name)
    prompt = torch.randint(0, VOCAB, (3, 7))
    recurrent = lm.generate(prompt, 20, method="recurrent")
    assert recurrent.shape == (3, 27) and torch.equal(recurrent[:, :7], prompt)
    assert torch.equal(recurrent, lm.generate(prompt, 20, method="reforward"))
    assert torch.equal(recurrent, lm.generate(prompt, 20, method="kv_cache"))


@pytest.mark.parametrize("name", models.LM_NAMES)
def test_sampled_generation_with_a_seed_is_repeatable_and_the_same_for_both_methods(name):
    lm = small_lm(name)
    prompt = torch.randint(0, VOCAB, (3, 5))
    sample = lm.generate(prompt, 20, temperature=1.0, seed=7)
    assert torch.equal(sample, lm.generate(prompt, 20, temperature=1.0, seed=7))
    assert torch.equal(sample, lm.generate(prompt, 20, method="reforward", temperature=1.0, seed=7))
    assert not torch.equal(sample, lm.generate(prompt, 20, temperature=1.0, seed=8))
    assert not torch.equal(sample, lm.generate(prompt, 20))  # sampling is not greedy


def test_generation_of_zero_tokens_returns_the_prompt():
    lm = small_lm("gss")
    prompt = torch.randint(0, VOCAB, (2, 4))
    for method in models.GENERATE_METHODS:
        assert torch.equal(lm.generate(prompt, 0, method=method), prompt)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(method="beam"), "unknown method 'beam'; valid methods: recurrent, kv_cache, reforward"),
        (dict(temperature=-1.0), "temperature must be >= 0"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small_lm("gss").generate(torch.zeros(1, 3, dtype=torch.long), 2, **kwargs)


def test_kv_cache_holds_rotary_keys_at_absolute_positions():
    layer = small_layer("attention")
    x = torch.randn(2, 9, DIM, dtype=torch.float64)
    with torch.no_grad():
        _, state = layer.prefill(x, max_len=16)
    assert isinstance(state, KVCache) and state.length == 9 and state.k.shape == (2, 2, 16, 8)
    _, k, v = layer._forward(x)
    assert torch.equal(state.keys, k) and torch.equal(state.values, v)
