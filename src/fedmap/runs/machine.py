"""The machine a run ran on, recorded in its ``summary.json``."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch


def machine_info(device: torch.device) -> dict[str, Any]:
    """What decides the last bits of every float: CPU, kernel ISA, threads, GPU.

    A rerun is bit-identical only with the same kernels and thread count: other CPUs (AVX2 against
    AVX-512, oneDNN's ISA) and other thread counts round differently in the 7th digit, and a
    chaotic warm-up (Dirichlet 0.1) can turn that into a different run. Recording them lets a reader
    tell such a rerun from a regression. A resumed run names the machine that finished it; a Flower
    run names the ServerApp's, since the server never learns the clients' machines.
    """
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform.processor`` is empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
