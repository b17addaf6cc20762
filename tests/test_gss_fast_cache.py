"""gss-fast's kernel cache (models.gss_fast.FastDSS._cached): used while autograd is off, in train() and eval(),
and never stale: in-place edits, load_state_dict, conversions, parameters made in inference mode, grad mode."""

import copy

import pytest
import torch

from tests.test_gss_fast import SMALL, grads, pair, rel


@pytest.mark.parametrize("train", [True, False])
def test_cache_reuses_the_kernel(train):
    ref, fast = pair()
    fast.train(train)
    x = torch.randn(2, 64, SMALL["dim"])
    with torch.no_grad():
        first = fast(x)
        n = fast.dss.kernel_computations
        second = fast(x)
    assert n == 1 and fast.dss.kernel_computations == 1
    assert torch.equal(first, second)
    with torch.no_grad():
        assert rel(second, ref(x)) < 1e-5
        fast(torch.randn(2, 100, SMALL["dim"]))  # another length: recomputed
        assert fast.dss.kernel_computations == 2
        fast(x)  # one entry only: 64 again is recomputed too
    assert fast.dss.kernel_computations == 3
    assert copy.deepcopy(fast).dss._kernel_cache is None


@pytest.mark.parametrize("name", ["Lambda_real", "Lambda_imag", "C_real", "C_imag"])
@pytest.mark.parametrize("through_data", [False, True])
def test_in_place_edits_are_never_stale(name, through_data):
    ref, fast = pair()
    x = torch.randn(2, 64, SMALL["dim"])
    with torch.inference_mode():
        fast(x)
    with torch.no_grad():
        p = getattr(fast.dss, name)
        version = p._version
        (p.data if through_data else p).mul_(0.5)  # .data does not bump the version counter
        assert (p._version == version) == through_data
        ref.load_state_dict(fast.state_dict())
    with torch.inference_mode():
        out, out_ref = fast(x), ref(x)
    assert fast.dss.kernel_computations == 2
    assert rel(out, out_ref) < 1e-5


def test_load_state_dict_invalidates():
    ref, fast = pair()
    _, other = pair(seed=1)
    x = torch.randn(2, 64, SMALL["dim"])
    with torch.no_grad():
        fast(x)
        fast.load_state_dict(other.state_dict())
        assert rel(fast(x), other(x)) < 1e-5
        assert rel(fast(x), ref(x)) > 1e-3
    assert fast.dss.kernel_computations == 2  # its own weights, then other's (computed once, then cached)


def test_conversion_drops_the_cache():
    ref, fast = pair()
    x = torch.randn(2, 64, SMALL["dim"])
    with torch.no_grad():
        fast(x)
        ref.double(), fast.double()
        assert fast.dss._kernel_cache is None
        assert rel(fast(x.double()), ref(x.double())) < 1e-12


def test_parameters_created_in_inference_mode():
    x = torch.randn(2, 64, SMALL["dim"])
    with torch.inference_mode():
        ref, fast = pair()  # inference tensors: no version counters, the values guard the cache
        fast(x)
        for model in (ref, fast):
            model.dss.Lambda_imag.add_(0.1)
        assert rel(fast(x), ref(x)) < 1e-5
    assert fast.dss.kernel_computations == 2


def test_grad_enabled_calls_never_use_the_cache():
    ref, fast = pair()
    x = torch.randn(2, 64, SMALL["dim"])
    with torch.no_grad():
        fast(x)
    entry = fast.dss._kernel_cache
    out_ref, _, gp_ref = grads(ref, x)
    out, _, gp = grads(fast, x)
    assert fast.dss.kernel_computations == 2 and fast.dss._kernel_cache is entry  # not read, not written
    assert rel(out, out_ref) < 1e-5
    for name in ("dss.Lambda_real", "dss.Lambda_imag", "dss.C_real", "dss.C_imag"):
        assert gp[name] is not None and gp[name].abs().max() > 0
        assert rel(gp[name], gp_ref[name]) < 1e-4, name
    fast.dss.clear_kernel_cache()
    grads(fast, x)
    assert fast.dss._kernel_cache is None  # a grad-enabled call does not fill it either


def test_inference_mode_then_no_grad_then_grad():
    ref, fast = pair()
    x = torch.randn(2, 64, SMALL["dim"])
    with torch.inference_mode():
        first = fast(x)
    assert fast.dss._kernel_cache[2].is_inference()
    with torch.no_grad():
        second = fast(x)  # the inference tensor reused outside inference mode
        y = fast(x) * 2 + 1
    assert fast.dss.kernel_computations == 1
    assert torch.equal(first, second) and not second.is_inference() and rel(y, 2 * first + 1) < 1e-6
    out_ref, gx_ref, _ = grads(ref, x)
    out, gx, _ = grads(fast, x)  # grad mode: recomputed, differentiable
    assert fast.dss.kernel_computations == 2
    assert rel(out, out_ref) < 1e-5 and rel(gx, gx_ref) < 1e-4
