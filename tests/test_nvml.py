"""The `nvml` source fed recorded NVML answers; owners of GPU processes; watch's and doctor's GPU rows."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import attrs
import pytest

from grid_core.builtin import nvml_metrics, psutil_metrics
from grid_core.builtin.nvml_metrics import NvmlReader, NvmlStatus
from grid_core.metrics import ProcessEntry, label_processes, owner_of, parse_nvidia_smi
from grid_core.types import GpuProcess, GpuReading

GIB = 2**30
# Recorded on an H200 host (driver 550.54.15): a training job and a Ray task on GPU 0, GPU 1 idle.
STATUS = NvmlStatus(True, driver_version="550.54.15", nvml_version="12.550.54.15", gpu_count=2)
RECORDED = (
    GpuReading(0, "NVIDIA H200", 87.0, 40 * GIB, 143771 * 2**20, temperature_c=61.0, power_watts=412.5,
               processes=(GpuProcess(4242, 38 * GIB), GpuProcess(5151, 2 * GIB))),
    GpuReading(1, "NVIDIA H200", 0.0, 512 * 2**20, 143771 * 2**20, temperature_c=33.0, power_watts=72.25),
)


class NVMLError(Exception):
    """pynvml.NVMLError's shape: str() is NVML's message."""


class FakeNvml:
    """pynvml's functions, answering from grid's own records as NVML would (ctypes-like objects,
    milliwatts, bytes from older bindings, NOT_SUPPORTED for readings a record lacks)."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, status: NvmlStatus, gpus: tuple[GpuReading, ...], init_error: str | None = None,
                 lost: frozenset[int] = frozenset(), graphics: tuple[GpuProcess, ...] = ()) -> None:
        self.status, self.gpus, self.init_error, self.lost, self.graphics = status, gpus, init_error, lost, graphics
        self.calls = 0

    def nvmlInit(self) -> None:
        self.calls += 1
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlSystemGetDriverVersion(self) -> bytes:
        return self.status.driver_version.encode()  # bindings before 11.5 return bytes

    def nvmlSystemGetNVMLVersion(self) -> str:
        return self.status.nvml_version

    def nvmlDeviceGetCount(self) -> int:
        return self.status.gpu_count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> GpuReading:
        if index in self.lost:
            raise NVMLError("GPU is lost")
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: GpuReading) -> str:
        return handle.name

    def nvmlDeviceGetMemoryInfo(self, handle: GpuReading) -> Any:
        return SimpleNamespace(used=handle.memory_used_bytes, total=handle.memory_total_bytes,
                               free=handle.memory_total_bytes - handle.memory_used_bytes)

    def nvmlDeviceGetUtilizationRates(self, handle: GpuReading) -> Any:
        return SimpleNamespace(gpu=int(handle.util_percent), memory=0)

    def nvmlDeviceGetTemperature(self, handle: GpuReading, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        if handle.temperature_c is None:
            raise NVMLError("Not Supported")
        return int(handle.temperature_c)

    def nvmlDeviceGetPowerUsage(self, handle: GpuReading) -> int:
        if handle.power_watts is None:
            raise NVMLError("Not Supported")
        return round(handle.power_watts * 1000)  # milliwatts

    def nvmlDeviceGetComputeRunningProcesses(self, handle: GpuReading) -> list[Any]:
        return [SimpleNamespace(pid=p.pid, usedGpuMemory=p.memory_used_bytes) for p in handle.processes
                if p.kind == "compute"]

    def nvmlDeviceGetUUID(self, handle: GpuReading) -> bytes:
        if handle.uuid is None:
            raise NVMLError("Not Supported")
        return handle.uuid.encode()  # bytes, as older bindings answer

    def nvmlDeviceGetProcessUtilization(self, handle: GpuReading, since: int) -> list[Any]:
        """NVML's per-process samples: one per process with a share; NOT_SUPPORTED (3) where none has one."""
        if all(p.util_percent is None for p in handle.processes):
            error = NVMLError("Not Supported")
            error.value = 3  # type: ignore[attr-defined]
            raise error
        return [SimpleNamespace(pid=p.pid, timeStamp=since + 1, smUtil=int(p.util_percent), memUtil=0)
                for p in handle.processes if p.util_percent]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: GpuReading) -> list[Any]:
        return [SimpleNamespace(pid=p.pid, usedGpuMemory=p.memory_used_bytes)
                for p in self.graphics if handle.index == 0]


def reader(fake: FakeNvml) -> NvmlReader:
    return NvmlReader(lambda: fake)


def test_readings_come_back_as_recorded() -> None:
    nvml = reader(FakeNvml(STATUS, RECORDED))
    assert nvml.status() == STATUS
    assert nvml.gpus() == RECORDED


def test_unsupported_temperature_and_power_are_none_and_a_lost_gpu_is_left_out() -> None:
    bare = attrs.evolve(RECORDED[1], temperature_c=None, power_watts=None)
    nvml = reader(FakeNvml(STATUS, (RECORDED[0], bare), lost=frozenset({0})))
    assert nvml.gpus() == (bare,)


def test_graphics_processes_are_listed_once_and_unknown_memory_is_none() -> None:
    graphics = (GpuProcess(4242, 1, "graphics"), GpuProcess(777, None, "graphics"))
    (gpu0, _gpu1) = reader(FakeNvml(STATUS, RECORDED, graphics=graphics)).gpus()
    assert [(p.pid, p.kind, p.memory_used_bytes) for p in gpu0.processes] == [
        (4242, "compute", 38 * GIB), (5151, "compute", 2 * GIB), (777, "graphics", None)]


@pytest.mark.parametrize(("load_error", "init_error", "reason"), [
    (ImportError("No module named 'pynvml'"), None, "nvidia-ml-py is not installed"),
    (None, "NVML Shared Library Not Found", "no NVIDIA driver (NVML Shared Library Not Found)"),
    (None, "Driver Not Loaded", "no NVIDIA driver (Driver Not Loaded)"),
])
def test_no_library_or_driver_is_no_gpu_with_a_reason(load_error: Exception | None, init_error: str | None,
                                                      reason: str) -> None:
    fake = FakeNvml(STATUS, RECORDED, init_error=init_error)

    def load() -> FakeNvml:
        if load_error:
            raise load_error
        return fake

    nvml = NvmlReader(load)
    assert nvml.gpus() == ()
    status = nvml.status()
    assert not status.available and status.reason.startswith(reason) and status.line() == status.reason


def test_a_failed_init_is_retried_only_after_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(STATUS, RECORDED, init_error="Driver Not Loaded")
    nvml = reader(fake)
    now = [1000.0]
    monkeypatch.setattr(nvml_metrics.time, "monotonic", lambda: now[0])
    for _ in range(3):
        assert nvml.gpus() == ()
    assert fake.calls == 1
    fake.init_error = None
    now[0] += nvml_metrics.RETRY_SECONDS + 1
    assert nvml.gpus() == RECORDED and fake.calls == 2


def test_doctor_line_starts_with_the_driver_version() -> None:
    assert STATUS.line() == "550.54.15 (driver; NVML 12.550.54.15, 2 GPUs)"


# --------------------------------------------------------------------------- owners

TABLE = {e.pid: e for e in (
    ProcessEntry(1, 0, "/sbin/init"),
    ProcessEntry(100, 1, "ray::JobRunner"),  # the actor that runs grid job j1
    ProcessEntry(4242, 100, "python"),  # j1's command
    ProcessEntry(4300, 4242, "python"),  # a data loader it forked
    ProcessEntry(200, 1, "ray::train_step"),  # a Ray task
    ProcessEntry(5151, 200, "/usr/bin/nvidia-cuda-mps"),
    ProcessEntry(300, 1, "ray::"),
    ProcessEntry(600, 1, "jupyter-lab"),
    ProcessEntry(700, 701, "loop"),
    ProcessEntry(701, 700, "loop"),
)}


@pytest.mark.parametrize(("pid", "owner"), [
    (4242, ("grid job", 4242)), (4300, ("grid job", 4242)), (100, ("grid job", None)),
    (200, ("ray train_step", None)), (5151, ("ray train_step", None)), (300, ("ray worker", None)),
    (600, ("", None)), (999, ("", None)), (700, ("", None)),
])
def test_owner_from_the_process_and_its_ancestors(pid: int, owner: tuple[str, int | None]) -> None:
    assert owner_of(pid, TABLE.get) == owner


def test_the_reader_labels_gpu_processes_through_the_lookup() -> None:
    (gpu0, gpu1) = reader(FakeNvml(STATUS, RECORDED)).gpus(TABLE.get)
    assert [(p.pid, p.owner, p.job_pid) for p in gpu0.processes] == [(4242, "grid job", 4242),
                                                                     (5151, "ray train_step", None)]
    assert gpu1 == RECORDED[1]
    assert label_processes((), TABLE.get) == ()


# --------------------------------------------------------------------------- nvidia-smi fallback and psutil


def test_nvidia_smi_rows_with_temperature_and_power() -> None:
    gpus = parse_nvidia_smi("0, NVIDIA H200, 87, 40960, 143771, 61, 412.50\n1, NVIDIA H200, 0, 512, 143771, "
                            "[N/A], [N/A]\n")
    assert [(g.temperature_c, g.power_watts) for g in gpus] == [(61.0, 412.5), (None, None)]
    assert parse_nvidia_smi("0, A, 1, 2, 3")[0].temperature_c is None  # the five-column form still parses


def test_psutil_takes_gpus_from_nvml_and_falls_back_to_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    smi = (GpuReading(0, "from nvidia-smi", 1.0, 1, 2),)
    monkeypatch.setattr(psutil_metrics, "nvidia_smi_gpus", lambda: smi)
    monkeypatch.setattr(nvml_metrics, "READER", reader(FakeNvml(STATUS, RECORDED)))
    monkeypatch.setattr(nvml_metrics, "local_process", TABLE.get)
    assert [g.name for g in psutil_metrics.local_gpus()] == ["NVIDIA H200", "NVIDIA H200"]
    assert psutil_metrics.local_gpus()[0].processes[0].owner == "grid job"
    monkeypatch.setattr(nvml_metrics, "READER", reader(FakeNvml(STATUS, RECORDED, init_error="Driver Not Loaded")))
    assert psutil_metrics.local_gpus() == smi


def test_the_nvml_source_never_hides_a_utilisation_source() -> None:
    from grid_core.config import NodeConfig
    from grid_core.plugins import PluginHost

    source = PluginHost(no_plugins=True).get("grid_metrics_sources", "nvml").factory()
    assert source.sample(NodeConfig(name="a"), object()) is None
    assert isinstance(source.status(), NvmlStatus)


# --------------------------------------------------------------------------- watch and doctor


def test_watch_shows_a_row_per_gpu_and_the_job_that_holds_each_process() -> None:
    from rich.console import Console

    from grid_core.cli.watch import gpu_holder, render
    from grid_core.types import ControllerStatus, JobRecord, NodeState

    gpus = reader(FakeNvml(STATUS, RECORDED)).gpus(TABLE.get)
    status = ControllerStatus(cluster="lab", thresholds={"gpu": 90.0}, low={"gpu": 70.0},
                              nodes=(NodeState(name="gpu1", role="worker", gpu_percent=87.0, gpus=tuple(gpus)),))
    jobs = [JobRecord(id="j1", node="gpu1", pid=4242, state="running", argv=("python", "train.py"), submitted=0.0)]
    console = Console(width=200, record=True)
    console.print(render(status, jobs))
    text = console.export_text()
    row0 = next(line for line in text.splitlines() if "0 NVIDIA H200" in line)
    assert "61°C" in row0 and "412 W" in row0 and "4242 38912 MiB job j1" in row0
    assert "5151 2048 MiB ray train_step" in row0
    row1 = next(line for line in text.splitlines() if "1 NVIDIA H200" in line)
    assert "33°C" in row1 and row1.rstrip().endswith("-")
    # The same pid on another node is not that job.
    assert gpu_holder(GpuProcess(4242, None, owner="grid job", job_pid=4242), "gpu2", jobs) == "grid job"


def test_doctor_reports_driver_and_nvml_versions_or_why_not() -> None:
    from grid_core.cli.doctor import Probe, checks_for
    from grid_core.config import NodeConfig

    facts = {"python": "3.11.7", "engine": "2.40.0", "nvidia": "nvidia-smi", "nvml": STATUS.line()}
    gpu_node = NodeConfig(name="g", gpu_count=2)

    def gpu_check(node: NodeConfig, facts: dict[str, str]) -> Any:
        return next((c for c in checks_for(node, Probe("python3", facts), None, True) if c.name == "gpu"), None)

    assert gpu_check(gpu_node, facts) == attrs.evolve(gpu_check(gpu_node, facts), ok=True, detail=STATUS.line())
    missing = {"python": "3.11.7", "engine": "2.40.0", "nvml_error": "no NVIDIA driver (Driver Not Loaded)"}
    check = gpu_check(gpu_node, missing)
    assert not check.ok and "nvidia-smi" in check.detail and "no NVIDIA driver" in check.detail
    plain = NodeConfig(name="p")
    assert gpu_check(plain, {"python": "3.11.7", "engine": "2.40.0", "nvml_error": "no NVIDIA driver (x)"}) is None
    assert gpu_check(plain, facts).detail == STATUS.line()  # GPUs the config does not declare
