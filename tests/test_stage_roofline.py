"""Each profiled stage's counts (bench.core.stages): FLOPs attributed as the time breakdown attributes time,
summing to the step's count, minimum bytes against hand counts, and the op breakdown's roofline columns."""

import pytest
import torch
from torch.profiler import record_function

from bench import profiling
from bench.core.flops import count_flops, fft_flops
from bench.core.stages import StageCounts, count_stages, footprint, union_bytes
from bench.core.timing import make_step
from tests.compare import SMALL, small_layer

B, L, D = 2, 32, 16
FLOAT = 4  # bytes of a float32


def counted(layer, mode, *, x=None, warm=True):
    """The stage counts of one step of `layer` on x (B, L, D), after one uncounted step (caches warm)."""
    torch.manual_seed(1)
    step = make_step(layer, torch.randn(B, L, D) if x is None else x, mode=mode)
    if warm:
        step()
    return count_stages(step, layer, profiling.RANGES), step


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_categories_flops_sum_to_the_steps_count(name, mode):
    counts, step = counted(small_layer(name, dtype=torch.float32), mode)
    total = count_flops(step)
    print(name, mode, counts.flops, total)
    assert sum(counts.flops.values()) == counts.total_flops == total > 0
    assert set(counts.flops) <= set(profiling.CATEGORIES)
    assert ("backward" in counts.flops) == (mode == "fwdbwd")
    assert set(counts.min_bytes) <= set(profiling.RANGES) and counts.min_bytes["norm"] > 0


def gss_parts(layer):
    E, H, N = layer.dim_hidden, layer.hidden_H, layer.mixer.kernel_N
    return E, H, N, 2 * B * L * (D * E + D * H + H * E + E * D)  # W_u, W_v, W_g, W_o


def test_gss_forward_flops_go_to_their_ranges():
    layer = small_layer("gss", dtype=torch.float32)
    _, H, N, projection = gss_parts(layer)
    counts, _ = counted(layer, "fwd")
    rfft_2L = fft_flops(2 * L)  # one real FFT of the zero-padded length
    assert counts.flops == dict(
        projection=projection,
        dss_kernel=8 * H * N * L,  # the complex einsum "hn,nl->lh"
        fft_conv=rfft_2L * (2 * B * H + H),  # rfft(u), irfft(y) per (batch, channel), rfft(K) per channel
    )


def test_a_range_nested_in_another_owns_its_flops_and_the_backward_gets_the_engines():
    layer = small_layer("gss-fast", dtype=torch.float32)
    _, H, N, projection = gss_parts(layer)
    rfft_2L = fft_flops(2 * L)
    counts, step = counted(layer, "fwdbwd")
    # FFTConv and its real kernel product run inside fft_conv, the kernel inside dss_kernel, nested in it
    assert counts.flops["dss_kernel"] == 2 * L * 2 * N * H
    assert counts.flops["fft_conv"] == rfft_2L * (2 * B * H + H)
    assert counts.flops["projection"] == projection and "other" not in counts.flops
    assert counts.flops["backward"] == count_flops(step) - sum(v for c, v in counts.flops.items() if c != "backward")
    fwd, _ = counted(layer, "fwd")  # autograd off: the cached spectrum, so no kernel product and no rfft(K)
    assert fwd.flops == dict(projection=projection, fft_conv=rfft_2L * 2 * B * H)
    assert fwd.min_bytes["dss_kernel"] > 0  # the cache's check reads the parameters


class Toy(torch.nn.Module):
    """Ranges around plain ops, whose bytes and FLOPs are counted by hand."""

    def __init__(self, body):
        super().__init__()
        self.norm = torch.nn.LayerNorm(D)
        self.weight = torch.nn.Parameter(torch.randn(D, D))
        self.body = body

    def forward(self, x):
        return self.body(self, x)


def norm_then_matmul_outside(self, x):
    with record_function("norm"):
        h = self.norm(x)
    return h @ self.weight  # outside every range: other


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
def test_norm_moves_its_input_parameters_and_output_once_and_unranged_ops_are_other(mode):
    counts, _ = counted(Toy(norm_then_matmul_outside), mode)
    assert counts.min_bytes == dict(norm=B * L * D * FLOAT + 2 * D * FLOAT + B * L * D * FLOAT)
    matmul = 2 * B * L * D * D
    assert counts.flops == (dict(other=matmul) if mode == "fwd" else dict(other=matmul, backward=2 * matmul))


def views_and_saved_intermediates(self, x):
    with record_function("projection"):
        halves = x[..., : D // 2] * 2, x[..., D // 2 :] * 3  # two slices of x, and x whole, below: x once
        a = (x.transpose(1, 2) + 1).exp()  # (B, D, L), read by the product's backward only
        b = a * a
        out = torch.cat(halves, -1) + b.transpose(1, 2)
    return out.sum(-1)  # read outside the range: out leaves it


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
def test_a_stage_counts_each_byte_once_across_views_and_not_what_only_the_backward_reads(mode):
    counts, _ = counted(Toy(views_and_saved_intermediates), mode)
    assert counts.min_bytes == dict(projection=2 * B * L * D * FLOAT)  # x in, out out; a is never counted


def test_the_layers_own_ranges_move_what_enters_and_leaves_them():
    layer = small_layer("gss", dtype=torch.float32)
    _, H, N, _ = gss_parts(layer)
    for mode in ("fwd", "fwdbwd"):
        counts, _ = counted(layer, mode)
        assert counts.min_bytes["fft_conv"] == (B * L * H + L * H + B * L * H) * FLOAT  # u, K in; y out
        # the layer's norm over (B, L, D), then the mixer's over (B, L, H), each with its weight and bias
        assert counts.min_bytes["norm"] == (2 * B * L * D + 2 * D + 2 * B * L * H + 2 * H) * FLOAT
        # Lambda (N,) and C (H, N), each as its real and imaginary parts, in; K, the real part of (L, H), out
        assert counts.min_bytes["dss_kernel"] == (2 * N + 2 * H * N + L * H) * FLOAT


def test_attention_moves_q_k_v_once_though_rotary_reads_their_halves():
    layer = small_layer("attention", dtype=torch.float32)
    counts, _ = counted(layer, "fwd")
    qkv = B * L * D * FLOAT  # each of q, k, v, and the output
    # rotary: q, k in and out; attention: q, k, v in, the output out
    assert counts.min_bytes["attention"] == 4 * qkv + 4 * qkv


class Squared(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x @ x.transpose(-1, -2)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        with record_function("projection"):  # a range the backward opens owns its ops, as in the time split
            return (grad + grad.transpose(-1, -2)) @ x


def test_a_range_opened_in_the_backward_pass_owns_its_ops():
    counts, _ = counted(Toy(lambda self, x: Squared.apply(x * 2)), "fwdbwd")
    forward = 2 * B * L * L * D
    assert counts.flops == dict(other=forward, projection=forward)
    # the gradient (B, L, L) and the saved x * 2 in, its gradient out to the product's backward
    assert counts.min_bytes == dict(projection=(B * L * L + B * L * D + B * L * D) * FLOAT)


def footprints(*views):
    return {footprint(v)[1] for v in views}


def test_union_bytes_counts_each_byte_of_overlapping_views_once():
    x = torch.zeros(4, 6)
    assert union_bytes(footprints(x)) == 24 * FLOAT
    assert union_bytes(footprints(x, x.t(), x.view(24), x[:, :3], x[1:])) == 24 * FLOAT
    assert union_bytes(footprints(x[:, :2], x[:, 4:])) == 16 * FLOAT  # two column blocks, a gap between
    assert union_bytes(footprints(x[0].expand(5, 6))) == 6 * FLOAT  # broadcast rows are the same bytes
    z = torch.zeros(3, 2, dtype=torch.complex64)
    assert union_bytes(footprints(z, torch.view_as_real(z))) == 6 * 8
    assert union_bytes(footprints(z.real)) == 6 * FLOAT  # every other float


def breakdown(counts):
    times = dict(projection=2.0, fft_conv=1.0, backward=4.0, other=1.0)
    return profiling.Breakdown(times_ms=times, step_ms=8.0, steps=2, basis="cpu_wall", counts=counts)


def test_rows_set_each_category_against_the_limits():
    counts = StageCounts(
        flops=dict(projection=4e9, fft_conv=1e8, backward=8e9),
        min_bytes=dict(projection=2e7, fft_conv=4e7),
        total_flops=int(12.1e9),
    )
    limits = dict(matmul_flops_per_s=dict(float32=4e12, bfloat16=8e12), bandwidth_bytes_per_s=1e11)
    rows = {r["category"]: r for r in profiling.rows_of(breakdown(counts), "t", limits, "float32")}
    assert rows["projection"]["tflops_per_s"] == pytest.approx(2.0)  # 4e9 FLOPs in 2 ms
    assert rows["projection"]["peak_frac"] == pytest.approx(0.5)
    assert rows["projection"]["bandwidth_frac"] == pytest.approx(0.1)  # 2e7 B at 1e11 B/s: 0.2 ms of 2 ms
    assert rows["fft_conv"]["tflops_per_s"] == pytest.approx(0.1) and rows["fft_conv"]["peak_frac"] == pytest.approx(
        0.025
    )
    assert rows["fft_conv"]["bandwidth_frac"] == pytest.approx(0.4)
    assert rows["backward"]["peak_frac"] == pytest.approx(0.5) and rows["backward"]["min_bytes"] is None
    assert rows["backward"]["bandwidth_frac"] is None
    assert rows["other"]["flops"] == 0 and rows["other"]["tflops_per_s"] is None and rows["other"]["peak_frac"] is None
    bf16 = {r["category"]: r for r in profiling.rows_of(breakdown(counts), "t", limits, "bfloat16")}
    assert bf16["projection"]["peak_frac"] == pytest.approx(0.25)  # the cell's dtype's rate


def test_without_limits_the_counts_are_written_and_the_fractions_left_empty():
    counts = StageCounts(flops=dict(projection=4e9), min_bytes=dict(projection=2e7), total_flops=int(4e9))
    rows = {r["category"]: r for r in profiling.rows_of(breakdown(counts), "t")}
    assert rows["projection"]["flops"] == 4e9 and rows["projection"]["tflops_per_s"] == pytest.approx(2.0)
    assert rows["projection"]["min_bytes"] == 2e7
    assert all(r["peak_frac"] is None and r["bandwidth_frac"] is None for r in rows.values())
    uncounted = profiling.rows_of(breakdown(None), "t", {"matmul_flops_per_s": {"float32": 1.0}})
    assert all("flops" not in r and "peak_frac" not in r for r in uncounted)
