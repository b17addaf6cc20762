import pytest
import torch

from bench.core.memory import MIB, peak_memory_mb

TENSOR_MB = 1000 * 1000 * 4 / MIB  # 3.81 MiB


def test_one_tensor_alive_to_end():
    def fn():
        a = torch.empty(1000, 1000, dtype=torch.float32)
        a.fill_(1.0)  # in-place op on a counted storage: must not count it again
        return a

    assert peak_memory_mb(fn, device="cpu") == pytest.approx(3.81, rel=0.01)


def test_sequential_alloc_and_free_peaks_at_one_tensor():
    def fn():
        for _ in range(10):
            a = torch.ones(1000, 1000)
            del a

    assert peak_memory_mb(fn, device="cpu") == pytest.approx(TENSOR_MB, rel=0.01)


def test_two_tensors_alive_at_once():
    def fn():
        a = torch.ones(1000, 1000)
        b = torch.ones(1000, 1000)
        return a, b

    assert peak_memory_mb(fn, device="cpu") == pytest.approx(2 * TENSOR_MB, rel=0.01)


def test_views_share_one_storage():
    def fn():
        a = torch.ones(1000, 1000)
        views = [a.t(), a.view(-1), a[:500], a.reshape(500, 2000), a.transpose(0, 1)]
        return a, views

    assert peak_memory_mb(fn, device="cpu") == pytest.approx(TENSOR_MB, rel=0.01)


def test_preexisting_storages_and_their_views_are_not_counted():
    a = torch.ones(1000, 1000)

    def fn():
        a.mul_(2.0)
        return a.t(), a[:10]

    assert peak_memory_mb(fn, device="cpu") == 0.0


def test_mlp_fwdbwd_is_deterministic_and_sees_backward():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256))
    x = torch.randn(64, 256, requires_grad=True)

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).float().mean().backward()

    first_mb = peak_memory_mb(step, device="cpu")
    second_mb = peak_memory_mb(step, device="cpu")
    assert first_mb == second_mb
    # Param and input grads are allocated in backward and stay alive: the
    # mode must have seen the backward ops.
    grads_mb = (sum(p.numel() for p in module.parameters()) + x.numel()) * 4 / MIB
    assert first_mb >= grads_mb


def test_fwd_only_smaller_than_fwdbwd():
    torch.manual_seed(0)
    module = torch.nn.Linear(512, 512)
    x = torch.randn(128, 512)

    def fwd():
        with torch.inference_mode():
            module(x)

    def fwdbwd():
        module.zero_grad(set_to_none=True)
        module(x).mean().backward()

    assert 0 < peak_memory_mb(fwd, device="cpu") < peak_memory_mb(fwdbwd, device="cpu")


def test_storages_grown_during_the_step_are_counted_by_their_growth():
    a = torch.zeros(2**18)  # 1 MiB, allocated before the step

    def resized():
        t = torch.empty(0)
        t.resize_(2**20)  # grows to 4 MiB after it was first seen empty
        return t

    def into_out():
        out = torch.empty(0)
        torch.mul(a, 2, out=out)  # the kernel resizes `out` to 1 MiB
        return out

    def grow_preexisting():
        return b.resize_(2**19)  # 1 MiB -> 2 MiB: only the growth is new

    b = torch.zeros(2**18)
    assert peak_memory_mb(resized, device="cpu") == 4.0
    assert peak_memory_mb(into_out, device="cpu") == 1.0
    assert peak_memory_mb(grow_preexisting, device="cpu") == 1.0
