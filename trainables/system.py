"""What the machine under a trial is doing, sampled by the trial itself once per epoch.

The keys are MLflow's own system-metric names (its UI lists them under "System metrics"). Sampled in
the worker, not by a monitor on the driver, so that on a cluster they describe the node the trial
ran on; the stage loggers copy them to the trial's run with the epoch as step.
"""
from __future__ import annotations

import psutil
import torch

CPU = "system/cpu_utilization_percentage"
MEMORY_MB = "system/system_memory_usage_megabytes"
MEMORY_PERCENT = "system/system_memory_usage_percentage"
GPU_MEMORY_MB = "system/gpu_0_memory_usage_megabytes"
GPU_MEMORY_PERCENT = "system/gpu_0_memory_usage_percentage"
SYSTEM_METRICS = (CPU, MEMORY_MB, MEMORY_PERCENT, GPU_MEMORY_MB, GPU_MEMORY_PERCENT)


class SystemSampler:
    """`sample()`: the CPU utilisation since the previous sample (so, per epoch, the epoch's mean) and
    the memory in use now, of the machine and of the trial's GPU when it has one."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        psutil.cpu_percent()  # starts the interval the first sample reports on

    def sample(self) -> dict[str, float]:
        memory = psutil.virtual_memory()
        figures = {CPU: psutil.cpu_percent(), MEMORY_MB: memory.used / 2**20, MEMORY_PERCENT: memory.percent}
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)  # the whole device's, as MLflow's monitor reports
            figures.update({GPU_MEMORY_MB: (total - free) / 2**20, GPU_MEMORY_PERCENT: 100 * (total - free) / total})
        return figures
