"""pytest-benchmark set-up for the performance tests: the machine info every saved run carries."""

import platform

import torch


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        machine_info["gpu"] = torch.cuda.get_device_name()
        machine_info["gpu_count"] = torch.cuda.device_count()
        try:  # the driver version is not in torch's API; NVML has it where it is installed
            import pynvml

            pynvml.nvmlInit()
            machine_info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:
            machine_info["driver"] = None
    else:
        machine_info["gpu"] = None
    machine_info["cpu_model"] = platform.processor() or platform.machine()
