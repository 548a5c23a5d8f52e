"""What machine this is: the CPU's name and flags, native bf16, and a description for reports."""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

__all__ = ["cpu_bf16_supported", "cpu_name", "cpuinfo", "machine"]


@functools.cache
def cpuinfo() -> str:
    """The text of /proc/cpuinfo (read once), or "" where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_bf16_supported() -> bool:
    """Whether the CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), which makes bf16 autocast pay off."""
    flags = cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else the machine type (``x86_64``)."""
    names = [ln.split(":", 1)[1].strip() for ln in cpuinfo().splitlines() if ln.startswith("model name")]
    return names[0] if names else platform.machine()


def machine(device: Any = "cpu") -> dict[str, Any]:
    """A description of where a measurement ran: device, CPU, core and thread counts, torch, python
    (and the GPU's name on a CUDA device)."""
    import torch

    device = torch.device(device)
    info: dict[str, Any] = {
        "device": str(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
