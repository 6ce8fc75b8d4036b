"""The `nvml` metrics source: this machine's GPUs through NVML (nvidia-ml-py), with no subprocess.

Per GPU: utilisation, memory, temperature and power, and the processes on it with their memory,
each labelled with the grid job or Ray task it belongs to. NVML is initialised once per process
and kept. Where nvidia-ml-py, the library or the driver is missing, `gpus()` is empty and
`status().reason` says why; no NVML error leaves this module. `psutil` takes the GPUs of local
nodes from here, with nvidia-smi as its fallback; `procfs` nodes keep nvidia-smi over their
transport. The reading code takes the NVML module as an argument, so that tests feed it
recorded answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from grid_core.hookspecs import hookimpl
from grid_core.metrics import ProcessEntry, label_processes
from grid_core.record import record
from grid_core.types import GpuProcess, GpuReading, GridMetricsSource, NodeMetrics, Transport

if TYPE_CHECKING:
    from grid_core.config import NodeConfig

RETRY_SECONDS = 60.0  # a missing driver is not asked again on every sample
MILLI = 1000.0
NVML_ERROR_NOT_FOUND = 6


@record
class NvmlStatus:
    """Whether NVML answers here, and the driver and library versions or the reason it does not."""

    available: bool
    reason: str = ""  # why not, e.g. "no NVIDIA driver (NVML Shared Library Not Found)"
    driver_version: str = ""
    nvml_version: str = ""
    gpu_count: int = 0

    def line(self) -> str:
        """One line for doctor, the driver's version first: `550.54.15 (driver; NVML 12.550.54.15, 1 GPU)`,
        or the reason NVML does not answer."""
        if not self.available:
            return self.reason
        gpus = f"{self.gpu_count} GPU{'' if self.gpu_count == 1 else 's'}"
        return f"{self.driver_version} (driver; NVML {self.nvml_version}, {gpus})"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)  # older bindings: bytes


class NvmlReader:
    """Reads GPUs through an NVML module (pynvml, or a test's fake with the same functions)."""

    def __init__(self, load: Callable[[], Any] | None = None) -> None:
        self._load = load or _import_pynvml
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._status: NvmlStatus | None = None
        self._failed_at = 0.0
        self._sampled: dict[int, int] = {}  # per GPU: the newest per-process sample read (NVML's microseconds)

    def status(self) -> NvmlStatus:
        """Initialise NVML on first use (again after RETRY_SECONDS when it failed)."""
        with self._lock:
            if self._status is None or (not self._status.available
                                        and time.monotonic() - self._failed_at > RETRY_SECONDS):
                self._status = self._init()
            return self._status

    def _init(self) -> NvmlStatus:
        try:
            nvml = self._load()
        except ImportError:
            return self._failed("nvidia-ml-py is not installed (pip install nvidia-ml-py)")
        try:
            nvml.nvmlInit()
            status = NvmlStatus(True, driver_version=_text(nvml.nvmlSystemGetDriverVersion()),
                                nvml_version=_text(nvml.nvmlSystemGetNVMLVersion()),
                                gpu_count=int(nvml.nvmlDeviceGetCount()))
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ... or an OSError from ctypes
            return self._failed(f"no NVIDIA driver ({_text(exc) or type(exc).__name__})")
        self._nvml = nvml
        return status

    def _failed(self, reason: str) -> NvmlStatus:
        self._failed_at = time.monotonic()
        return NvmlStatus(False, reason)

    def gpus(self, lookup: Callable[[int], ProcessEntry | None] | None = None) -> tuple[GpuReading, ...]:
        """One reading per GPU that reports; () without NVML. `lookup` labels processes' owners."""
        status = self.status()
        if not status.available:
            return ()
        readings = tuple(r for r in (self._read(i) for i in range(status.gpu_count)) if r is not None)
        if lookup is None or not any(r.processes for r in readings):
            return readings
        return tuple(attrs.evolve(r, processes=label_processes(r.processes, lookup)) for r in readings)

    def _read(self, index: int) -> GpuReading | None:
        nvml = self._nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            reading = GpuReading(index, _text(nvml.nvmlDeviceGetName(handle)),
                                 float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                                 int(memory.used), int(memory.total))
        except Exception:  # a GPU that cannot report (lost, MIG without utilisation) is left out, as with nvidia-smi
            return None
        temperature = self._optional(lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
        power = self._optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / MILLI)
        try:
            uuid: str | None = _text(nvml.nvmlDeviceGetUUID(handle))
        except Exception:
            uuid = None
        shares = self._shares(handle, index)
        processes = tuple(p if shares is None else attrs.evolve(p, util_percent=shares.get(p.pid, 0.0))
                          for p in self._processes(handle))
        return attrs.evolve(reading, temperature_c=temperature, power_watts=power, processes=processes, uuid=uuid)

    def _shares(self, handle: Any, index: int) -> dict[int, float] | None:
        """Each process's share of the GPU's time since the last read of this GPU, as NVML samples it
        per process (a process without a sample used none); None where the GPU does not sample it."""
        since = self._sampled.get(index, 0)
        try:
            samples = self._nvml.nvmlDeviceGetProcessUtilization(handle, since)
        except Exception as exc:
            # NVML_ERROR_NOT_FOUND, or pynvml's error for a success with no samples: no process used
            # the GPU since; anything else (NOT_SUPPORTED on older GPUs): it cannot say.
            return {} if getattr(exc, "value", None) in (0, NVML_ERROR_NOT_FOUND) else None
        latest: dict[int, tuple[int, float]] = {}
        for s in samples:
            if s.pid not in latest or s.timeStamp > latest[s.pid][0]:
                latest[s.pid] = (int(s.timeStamp), float(s.smUtil))
        if latest:
            self._sampled[index] = max(t for t, _ in latest.values())
        return {pid: util for pid, (_, util) in latest.items()}

    @staticmethod
    def _optional(read: Callable[[], float]) -> float | None:
        try:
            return read()
        except Exception:  # NVML_ERROR_NOT_SUPPORTED on this GPU
            return None

    def _processes(self, handle: Any) -> Iterator[GpuProcess]:
        seen: set[int] = set()
        for kind, query in (("compute", "nvmlDeviceGetComputeRunningProcesses"),
                            ("graphics", "nvmlDeviceGetGraphicsRunningProcesses")):
            try:
                found = getattr(self._nvml, query)(handle)
            except Exception:
                continue
            for proc in found:
                if proc.pid not in seen:  # a process with both contexts is listed once, as compute
                    seen.add(proc.pid)
                    used = proc.usedGpuMemory
                    yield GpuProcess(int(proc.pid), None if used is None else int(used), kind)


def _import_pynvml() -> Any:
    import pynvml

    return pynvml


def local_process(pid: int) -> ProcessEntry | None:
    """This machine's process `pid` for owner_of, or None when it is gone or hidden."""
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            argv = proc.cmdline()
            return ProcessEntry(pid, proc.ppid(), argv[0] if argv else proc.name())
    except psutil.Error:
        return None


def local_gpus() -> tuple[GpuReading, ...]:
    """This machine's GPUs through NVML, their processes labelled; () without NVML."""
    return READER.gpus(local_process)


READER = NvmlReader()  # one NVML session per process, shared by every caller


class NvmlSource:
    """Not a utilisation source of its own (`sample` gives None; psutil's readings include these
    GPUs): it offers `gpus()` and `status()` for this machine."""

    def sample(self, node: NodeConfig, transport: Transport) -> NodeMetrics | None:
        return None

    def gpus(self) -> tuple[GpuReading, ...]:
        """This machine's GPUs, with their processes' owners."""
        return local_gpus()

    def status(self) -> NvmlStatus:
        """Driver and NVML versions, or why NVML does not answer."""
        return READER.status()


@hookimpl
def grid_metrics_sources() -> Iterator[GridMetricsSource]:
    yield GridMetricsSource(name="nvml", summary="GPUs of this machine through NVML: use, memory, temperature, "
                            "power and processes", factory=NvmlSource)
