"""The machine line and the load warning every benchmark table carries."""
from __future__ import annotations

import os
import platform
import time
from typing import Sequence


def _cpuinfo_field(key: str) -> str | None:
    """The value of the first `key` line of /proc/cpuinfo, or None where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_type() -> str:
    """The CPU model with its widest vector instruction set, e.g. 'AMD EPYC (AVX-512)'.  Training on
    the CPU is reproducible from its seed on one CPU type, not across them: convolution kernels for
    AVX-512 and AVX2 round differently (docs/benchmarks.md, "Retrained seeds drift on another CPU")."""
    flags = set((_cpuinfo_field("flags") or "").split())
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    return f"{cpu_name()} ({isa})" if isa else cpu_name()


def machine_description(device: str = "cpu") -> str:
    """'N CPU cores (model), torch X[, GPU ...]'."""
    import torch

    s = f"{os.cpu_count()} CPU cores ({cpu_name()}), torch {torch.__version__}"
    if device == "cuda":
        s += f", GPU {torch.cuda.get_device_name(0)} (mixed precision as nnU-Net trains)"
    return s


def machine_line(device: str = "cpu") -> str:
    return f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {machine_description(device)}."


def is_loaded(load_averages: Sequence[float]) -> bool:
    """A machine is visibly loaded when its 1-minute load average exceeded its core count by half a
    core: the benchmarks measure with every core, so their own threads alone hold the load near the
    core count, and one more busy process lifts it by about one."""
    return max(load_averages, default=0.0) > (os.cpu_count() or 1) + 0.5


def load_note(load_averages: Sequence[float]) -> str:
    """One sentence on the machine's load during a run; a loud warning when it was loaded."""
    lo, hi = min(load_averages, default=0.0), max(load_averages, default=0.0)
    if is_loaded(load_averages):
        return (f"**WARNING: the machine was loaded during this run** (1-minute load average {lo:.1f}-{hi:.1f} on "
                f"{os.cpu_count()} cores): other processes took CPU time, so these timings are pessimistic and "
                f"their ratios less reliable.")
    return f"1-minute load average during the run {lo:.1f}-{hi:.1f} on {os.cpu_count()} cores (not loaded)."
