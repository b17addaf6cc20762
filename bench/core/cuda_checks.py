"""The CUDA paths a GPU run relies on, observed and checked before it measures (run_all.py --preset gpu-check),
and recorded in env.json under "cuda_check":

* the SDPA backend attention actually dispatches to, per dtype, read from the aten ops its forward runs. For
  bfloat16 and float16 on CUDA it must be a fused FlashAttention-style kernel: PyTorch's flash kernel, or
  cuDNN's fused attention, which torch 2.11 prefers on Hopper (seen on the H200, docs/gpu.md); the math or
  memory-efficient path would time another algorithm than a practitioner gets;
* that bench.core.timing times CUDA work with CUDA events: a GPU-side sleep of known length timed through
  bench.core.timing.measure agrees with the host clock around a synchronised call;
* the GPU: name, compute capability, memory, multiprocessors, torch's CUDA and cuDNN versions, and what
  nvidia-smi reports (driver, clocks, power, temperature) when it is there.

Each check is a pure function of a report (a dict), so its logic is tested on the CPU with planted reports;
the observing functions need the device.
"""

import statistics
import subprocess
import time

import torch
from torch.profiler import ProfilerActivity, profile

import models
from bench.core.timing import CLOCKS, autocast, measure

# The aten op each fused SDPA kernel runs as (the math path has none: it decomposes into matmuls and a softmax).
SDPA_OPS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}
FUSED = ("flash", "cudnn")
REQUIRED_SDPA = {"cuda": {"bfloat16": FUSED, "float16": FUSED}}  # device type -> dtype -> the backends accepted
SLEEP_CYCLES = 10_000_000  # the GPU-side sleep timed by the event check: ~5 ms at 2 GHz
TIMING_AGREEMENT = 0.25  # event and host times of the sleep agree within this fraction
SMI_FIELDS = (
    "name",
    "driver_version",
    "clocks.sm",
    "clocks.max.sm",
    "clocks.mem",
    "clocks.max.mem",
    "power.draw",
    "power.limit",
    "temperature.gpu",
    "memory.total",
    "pstate",
)


def sdpa_backend(op_names):
    """The backend named by the first fused SDPA op among `op_names`, else "math"."""
    return next((SDPA_OPS[name] for name in op_names if name in SDPA_OPS), "math")


def observed_sdpa_backends(device, dtypes, *, batch=1, seq_len=1024, dim=1024):
    """dtype -> the backend an attention layer's forward dispatches to on `device` (the suite's way: float32
    weights, the dtype as autocast)."""
    torch.manual_seed(0)
    layer = models.build_layer("attention", dim=dim, device=device)
    x = torch.randn(batch, seq_len, dim, device=device)
    seen = {}
    for dtype in dtypes:  # the profiler records every aten op, the kernel SDPA chose among them
        with torch.inference_mode(), autocast(dtype, device.type), profile(activities=[ProfilerActivity.CPU]) as prof:
            layer(x)
        seen[dtype] = sdpa_backend(e.name.removeprefix("aten::") for e in prof.events())
    return seen


def sdpa_failures(backends, device_type):
    """What is wrong with a {dtype: backend} report on a device type (empty: all is as required)."""
    required = REQUIRED_SDPA.get(device_type, {})
    return [
        f"attention in {dtype} ran SDPA's {backends[dtype]} backend, not {' or '.join(accepted)}"
        for dtype, accepted in required.items()
        if dtype in backends and backends[dtype] not in accepted
    ]


def event_timing(device, sleep=None, sync=None):
    """Work of a known length timed by bench.core.timing.measure, and by the host clock around five more calls with
    synchronisation (their median). On CUDA the work is a GPU-side sleep (the launch returns at once: a host timer
    without events would read microseconds); `sleep` and `sync` replace it (a CPU rehearsal)."""
    if sleep is None:

        def sleep():
            torch.cuda._sleep(SLEEP_CYCLES)

        def sync():
            torch.cuda.synchronize(device)

    timed = measure(sleep, device=device, warmup=1, min_repeats=5, max_repeats=5)
    host = []
    for _ in range(5):  # a median of as many calls: one call descheduled on a busy host is not a disagreement
        sync()
        start = time.perf_counter()
        sleep()
        sync()
        host.append((time.perf_counter() - start) * 1e3)
    return dict(clock=timed.clock, timed_ms=timed.median_ms, host_ms=statistics.median(host))


def timing_failures(report, device_type):
    """What is wrong with an event_timing report (empty: the device's clock timed the device's work)."""
    failures = []
    if report["clock"] != CLOCKS[device_type]:
        failures.append(f"bench.core.timing timed {device_type} work with {report['clock']}, not {CLOCKS[device_type]}")
    timed, host = report["timed_ms"], report["host_ms"]
    if not (timed > 0 and abs(timed / host - 1) <= TIMING_AGREEMENT):
        failures.append(
            f"a GPU sleep timed {timed:.3g} ms by bench.core.timing and {host:.3g} ms by the host clock: "
            f"they disagree by more than {TIMING_AGREEMENT:.0%}"
        )
    return failures


def parse_smi(text):
    """nvidia-smi --query-gpu=SMI_FIELDS --format=csv,noheader,nounits -> one dict per GPU (values as text)."""
    rows = [[v.strip() for v in line.split(",")] for line in text.strip().splitlines() if line.strip()]
    return [dict(zip(SMI_FIELDS, row)) for row in rows if len(row) == len(SMI_FIELDS)]


def nvidia_smi(run=subprocess.run):
    """What nvidia-smi reports of each GPU, or None where it cannot be run."""
    try:
        done = run(
            ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_smi(done.stdout) if done.returncode == 0 else None


def gpu_info(device):
    props = torch.cuda.get_device_properties(device)
    return dict(
        name=props.name,
        capability=f"{props.major}.{props.minor}",
        memory_gib=props.total_memory / 2**30,
        multiprocessors=props.multi_processor_count,
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version(),
        nvidia_smi=nvidia_smi(),
    )


def check(device, dtypes=("float32", "bfloat16", "float16")):
    """Observe and check the CUDA paths on `device`: (report for env.json, failures). An observation that raises
    is a failure, not the end of the run."""
    report, failures = {}, []
    for name, observe, judge in (
        ("gpu", gpu_info, None),
        ("sdpa_backend", lambda d: observed_sdpa_backends(d, dtypes), sdpa_failures),
        ("timing", event_timing, timing_failures),
    ):
        try:
            report[name] = observe(device)
        except Exception as error:  # recorded and reported: the measuring goes on
            failures.append(f"{name}: {type(error).__name__}: {error}")
            continue
        failures += judge(report[name], device.type) if judge else []
    return report, failures


def rehearse():
    """The checks' logic on the CPU (the dry run): the CPU's own SDPA dispatch and clock observed for real, then
    planted CUDA reports that must pass and must fail. Returns what did not behave (empty: all did)."""
    cpu = torch.device("cpu")
    problems = []
    seen = observed_sdpa_backends(cpu, ("float32", "bfloat16"), seq_len=64, dim=64)
    if seen != {"float32": "flash", "bfloat16": "flash"}:
        problems.append(f"SDPA on the CPU observed as {seen}, not its flash kernel")
    if sdpa_failures({"float32": "efficient", "bfloat16": "flash", "float16": "cudnn"}, "cuda"):
        problems.append("a CUDA report with fused kernels for bfloat16 and float16 was refused")
    if len(sdpa_failures({"bfloat16": "math", "float16": "efficient"}, "cuda")) != 2:
        problems.append("a CUDA report with math and efficient for half precision was accepted")
    if failures := timing_failures(event_timing(cpu, lambda: time.sleep(0.005), lambda: None), "cpu"):
        problems.append(f"the CPU clock failed its own check: {failures}")
    if timing_failures(dict(clock="cuda_events", timed_ms=5.01, host_ms=5.05), "cuda"):
        problems.append("agreeing event and host times were refused")
    if len(timing_failures(dict(clock="perf_counter", timed_ms=0.01, host_ms=5.0), "cuda")) != 2:
        problems.append("a host-clock timing of asynchronous CUDA work was accepted")
    line = "NVIDIA H200, 580.159.04, 1980, 1980, 3201, 3201, 120.5, 700.00, 35, 143771, P0"
    if parse_smi(line) != [dict(zip(SMI_FIELDS, (v.strip() for v in line.split(","))))]:
        problems.append("nvidia-smi's CSV was misread")
    return problems
