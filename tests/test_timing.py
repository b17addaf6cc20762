import time

import pytest
import torch

from bench.timing import MODES, Timing, make_step, measure


def test_sleep_median_within_5_percent():
    timing = measure(lambda: time.sleep(0.02), device="cpu", warmup=1, min_repeats=5, budget_s=0.5)
    assert isinstance(timing, Timing)
    assert timing.repeats >= 5
    assert timing.iqr_ms >= 0
    assert len(timing.times_ms) == timing.repeats
    assert timing.median_ms == pytest.approx(20.0, rel=0.05)


def test_large_target_stops_at_min_repeats():
    timing = measure(lambda: None, device="cpu", min_repeats=7, target_rel_iqr=1e9)
    assert timing.repeats == 7
    assert timing.stop_reason == "converged"


def test_tiny_budget_stops_early():
    # Alternating durations keep the relative IQR far above the target.
    durations_s = iter([0.0, 0.004] * 1000)
    timing = measure(
        lambda: time.sleep(next(durations_s)),
        device="cpu",
        warmup=0,
        min_repeats=3,
        max_repeats=200,
        budget_s=1e-6,
        target_rel_iqr=1e-9,
    )
    assert timing.repeats == 3
    assert timing.stop_reason == "budget"


def test_max_repeats_caps_the_run():
    timing = measure(lambda: None, device="cpu", min_repeats=2, max_repeats=4, budget_s=60, target_rel_iqr=-1)
    assert timing.repeats == 4
    assert timing.stop_reason == "max_repeats"


def test_slow_warmup_cuts_warmups_and_min_repeats():
    timing = measure(
        lambda: time.sleep(0.003), device="cpu", warmup=5, min_repeats=10, budget_s=0.001, target_rel_iqr=-1
    )
    assert timing.warmup == 1
    assert timing.repeats == 3


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        measure(lambda: None, device="cpu", min_repeats=5, max_repeats=2)


def _mlp_and_input():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    return module, torch.randn(3, 8)


def test_fwd_step_makes_no_grads():
    module, x = _mlp_and_input()
    step = make_step(module, x, mode="fwd")
    step()
    assert all(p.grad is None for p in module.parameters())
    assert x.grad is None


def test_fwdbwd_grads_on_params_and_input_without_accumulation():
    module, x = _mlp_and_input()
    step = make_step(module, x, mode="fwdbwd")
    assert step.x.requires_grad and not x.requires_grad
    step()
    first = [p.grad.clone() for p in module.parameters()]
    first_x = step.x.grad.clone()
    step()
    for p, g in zip(module.parameters(), first):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
    torch.testing.assert_close(step.x.grad, first_x, rtol=0, atol=0)


def test_fwdbwd_uses_grad_requiring_leaf_input_as_is():
    module, x = _mlp_and_input()
    x.requires_grad_(True)
    step = make_step(module, x, mode="fwdbwd")
    step()
    assert step.x is x and x.grad is not None


def test_fwdbwd_autocast_bf16():
    module, x = _mlp_and_input()
    step = make_step(module, x, mode="fwdbwd", autocast_dtype=torch.bfloat16)
    step()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in module.parameters())


def test_bad_mode_raises_naming_valid_modes():
    module, x = _mlp_and_input()
    with pytest.raises(ValueError, match="fwdbwd") as err:
        make_step(module, x, mode="bwd")
    assert all(mode in str(err.value) for mode in MODES)
