"""The `psutil` metrics source: readings of this machine, for nodes on the `local` transport."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from grid_core.hookspecs import hookimpl
from grid_core.metrics import NVIDIA_SMI_QUERY, parse_nvidia_smi
from grid_core.types import GpuReading, GridMetricsSource, NodeMetrics, Transport

if TYPE_CHECKING:
    from grid_core.config import NodeConfig

SAMPLE_SECONDS = 0.2


def local_gpus() -> tuple[GpuReading, ...]:
    """This machine's GPUs: through NVML when it answers (no subprocess per sample), else
    nvidia-smi when it is installed, else none."""
    from grid_core.builtin import nvml_metrics

    if nvml_metrics.READER.status().available:
        return nvml_metrics.local_gpus()
    return nvidia_smi_gpus()


def nvidia_smi_gpus() -> tuple[GpuReading, ...]:
    """GPU readings from one run of nvidia-smi; none where it is missing or fails."""
    if not shutil.which("nvidia-smi"):
        return ()
    try:
        out = subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_nvidia_smi(out)


class PsutilSource:
    """The first sample measures CPU over SAMPLE_SECONDS; later ones (a controller's, every
    interval) measure it since the previous sample, without waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None  # (when, cpu percent)

    def _cpu(self) -> float:
        import psutil

        with self._lock:  # psutil's "since the last call" is process-wide: one caller at a time
            now = time.monotonic()
            if self._last is None:
                cpu = psutil.cpu_percent(interval=SAMPLE_SECONDS)
            elif now - self._last[0] < SAMPLE_SECONDS:
                return self._last[1]  # another local node of this machine, read a moment ago
            else:
                cpu = psutil.cpu_percent(interval=None)
            self._last = (time.monotonic(), cpu)
            return cpu

    def sample(self, node: NodeConfig, transport: Transport) -> NodeMetrics | None:
        if node.transport_name != "local":
            return None
        import psutil

        mem = psutil.virtual_memory()
        cpu = self._cpu()
        return NodeMetrics(
            source="psutil",
            cpu_percent=cpu,
            memory_percent=mem.percent,
            swap_percent=psutil.swap_memory().percent,
            load1=os.getloadavg()[0],
            cpu_count=psutil.cpu_count() or 0,
            memory_total_bytes=mem.total,
            gpus=local_gpus(),
        )


@hookimpl
def grid_metrics_sources():  # type: ignore[no-untyped-def]
    yield GridMetricsSource(name="psutil", summary="CPU, memory, swap, load and GPUs of this machine",
                            factory=PsutilSource)
