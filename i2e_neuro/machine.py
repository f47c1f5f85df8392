"""What machine a benchmark ran on (the benchmarks print it beside their figures)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_text() -> str:
    """``"<CPU model>, <n> CPUs"``: the machine line every benchmark prints."""
    return f"{cpu_name()}, {os.cpu_count()} CPUs"


def run_context(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> dict:
    """The benchmark JSON's machine and load fields (``os.getloadavg()`` before and after)."""
    return {
        "machine": machine_text(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in load_after],
    }
