"""The `psutil` metrics source: readings of this machine, for nodes on the `local` transport.

CPU is a share of the CPUs this process may use (grid_core/node_cpus.py); the cluster's own
processes' CPU and memory are told apart from the rest (the owner's) when the cluster's markers
are known (CLUSTER_MARKERS_ENV); presence comes from grid_core/presence.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from grid_core import presence
from grid_core.hookspecs import hookimpl
from grid_core.metrics import NVIDIA_SMI_QUERY, parse_nvidia_smi
from grid_core.node_cpus import AllowedCpus, cgroup_usage_seconds, read_allowed_cpus, stat_percent
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


# Which processes are the cluster's: a process with a `--option` argument that names one of these
# markers (the marker followed by `/` or the end of the argument), and all its descendants. Markers
# are separated by os.pathsep. The ray backend sets it, for the processes it starts, to Ray's temp
# dir inside grid's node directory, the rule `cluster stop` uses; Ray's workers (the controller, a
# node's agent) inherit it. Unset: the cluster's share is unknown and left None.
CLUSTER_MARKERS_ENV = "GRID_CLUSTER_MARKERS"
NEW_PROCESS_SLACK = 1.0  # seconds: psutil's create_time is rounded through the boot time


def markers_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    value = (os.environ if environ is None else environ).get(CLUSTER_MARKERS_ENV, "")
    markers = tuple(m for m in value.split(os.pathsep) if m)
    return markers or None


def names_marker(argv: Sequence[str], markers: Sequence[str]) -> bool:
    """Whether a `--option` argument in argv names a marker (followed by `/` or its end)."""
    for arg in argv:
        if not arg.startswith("--"):
            continue
        for marker in markers:
            at = arg.find(marker)
            while at >= 0:
                end = at + len(marker)
                if end == len(arg) or arg[end] == "/":
                    return True
                at = arg.find(marker, at + 1)
    return False


def with_descendants(table: Mapping[int, tuple[int, Sequence[str]]], roots: Iterable[int]) -> set[int]:
    """`roots` and every process below them, in a table of pid -> (parent pid, argv)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _argv) in table.items():
        children.setdefault(ppid, []).append(pid)
    found = set(roots)
    frontier = list(found)
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def cluster_pids(table: Mapping[int, tuple[int, Sequence[str]]], markers: Sequence[str]) -> set[int]:
    """The cluster's processes in a table of pid -> (parent pid, argv): those naming a marker,
    and their descendants (Ray's workers, whose titles Ray rewrites)."""
    return with_descendants(table, (pid for pid, (_ppid, argv) in table.items() if names_marker(argv, markers)))


class ProcessSample(NamedTuple):
    """The cluster's processes at one moment: CPU seconds by (pid, start time), private memory."""

    wall: float  # time.time() when read
    cpu: dict[tuple[int, float], float]
    memory_bytes: int
    pids: frozenset[int] = frozenset()  # the cluster's processes


def cpu_seconds_between(before: ProcessSample, after: ProcessSample) -> float:
    """CPU seconds the cluster's processes used between two samples: each one's increase, and all
    of a process started since `before` (what a process used after the last sample and before it
    ended is not seen)."""
    used = 0.0
    for key, seconds in after.cpu.items():
        if key in before.cpu:
            used += max(0.0, seconds - before.cpu[key])
        elif key[1] >= before.wall - NEW_PROCESS_SLACK:
            used += seconds
    return used


def read_cluster_processes(markers: Sequence[str]) -> ProcessSample:
    import psutil

    table: dict[int, tuple[int, Sequence[str]]] = {}
    procs = {}
    for proc in psutil.process_iter(["ppid", "cmdline"]):
        info = proc.info
        if info.get("ppid") is not None:
            table[proc.pid] = (info["ppid"], info.get("cmdline") or ())
            procs[proc.pid] = proc
    wall = time.time()
    cpu: dict[tuple[int, float], float] = {}
    memory = 0
    pids = cluster_pids(table, markers)
    for pid in pids:
        proc = procs[pid]
        try:
            with proc.oneshot():
                times, mem, started = proc.cpu_times(), proc.memory_info(), proc.create_time()
        except (psutil.Error, OSError):  # ended, or not ours to read
            continue
        cpu[(pid, started)] = times.user + times.system
        memory += max(0, mem.rss - getattr(mem, "shared", 0))  # shared pages (Ray's object store) are not its own
    return ProcessSample(wall, cpu, memory, frozenset(pids))


class _Reading(NamedTuple):
    when: float  # monotonic
    stat: str | None  # /proc/stat (Linux)
    cgroup_seconds: float | None  # the quota's cgroup's CPU use so far
    machine_percent: float | None  # psutil's since-last-call figure, where there is no /proc/stat
    processes: ProcessSample | None


class CpuFigures(NamedTuple):
    cpu_percent: float
    cpu_count: int
    cluster_cpu_percent: float | None
    owner_cpu_percent: float | None
    cluster_memory_bytes: int | None
    cluster_pids: frozenset[int] | None = None  # None: the cluster's processes are unknown


def _read_stat() -> str | None:
    try:
        with open("/proc/stat", encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


class PsutilSource:
    """The first sample measures CPU over SAMPLE_SECONDS; later ones (a controller's, every
    interval) measure it since the previous sample, without waiting.

    CPU is of the allowed CPUs (node_cpus.py); the cluster's processes are found by the markers
    given here, else those in $GRID_CLUSTER_MARKERS; presence (owner_idle_seconds) is this
    machine's owner's, the user running grid (presence.py)."""

    def __init__(self, cluster_markers: Sequence[str] | None = None, presence: bool = True) -> None:
        self._lock = threading.Lock()
        self._markers = tuple(cluster_markers) if cluster_markers is not None else None
        self._presence = presence
        self._previous: _Reading | None = None
        self._last: tuple[float, CpuFigures] | None = None  # (when, figures)

    def _read(self, allowed: AllowedCpus, markers: Sequence[str] | None) -> _Reading:
        import psutil

        stat = _read_stat()
        cgroup = cgroup_usage_seconds(allowed.limit) if allowed.limit else None
        machine = psutil.cpu_percent(interval=None) if stat is None else None
        processes = read_cluster_processes(markers) if markers else None
        return _Reading(time.monotonic(), stat, cgroup, machine, processes)

    def _cpu(self) -> CpuFigures:
        import psutil

        with self._lock:  # readings are "since the previous one": one caller at a time
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < SAMPLE_SECONDS:
                return self._last[1]  # another local node of this machine, read a moment ago
            allowed = read_allowed_cpus()
            markers = self._markers if self._markers is not None else markers_from_env()
            before = self._previous
            if before is None:
                before = self._read(allowed, markers)
                time.sleep(SAMPLE_SECONDS)
            after = self._read(allowed, markers)
            figures = cpu_figures(before, after, allowed, psutil.cpu_count() or 0)
            self._previous = after
            self._last = (time.monotonic(), figures)
            return figures

    def sample(self, node: NodeConfig, transport: Transport) -> NodeMetrics | None:
        if node.transport_name != "local":
            return None
        import psutil

        from grid_core.gpus import owner_gpu_percent

        mem = psutil.virtual_memory()
        cpu = self._cpu()
        gpus = local_gpus()
        cluster_memory = owner_memory = None
        if cpu.cluster_memory_bytes is not None and mem.total > 0:
            cluster_memory = min(100.0, 100.0 * cpu.cluster_memory_bytes / mem.total)
            owner_memory = max(0.0, mem.percent - cluster_memory)
        return NodeMetrics(
            source="psutil",
            cpu_percent=cpu.cpu_percent,
            memory_percent=mem.percent,
            swap_percent=psutil.swap_memory().percent,
            load1=os.getloadavg()[0],
            cpu_count=cpu.cpu_count,
            memory_total_bytes=mem.total,
            gpus=gpus,
            owner_gpu_percent=None if cpu.cluster_pids is None else owner_gpu_percent(gpus, cpu.cluster_pids),
            cluster_cpu_percent=cpu.cluster_cpu_percent,
            owner_cpu_percent=cpu.owner_cpu_percent,
            cluster_memory_bytes=cpu.cluster_memory_bytes,
            cluster_memory_percent=cluster_memory,
            owner_memory_percent=owner_memory,
            owner_idle_seconds=self._idle(),
        )

    def _idle(self) -> float | None:
        if not self._presence:
            return None
        try:
            return presence.owner_idle_seconds()
        except Exception:  # presence is optional: an odd /dev or X library never fails a sample
            return None


def cpu_figures(before: _Reading, after: _Reading, allowed: AllowedCpus, machine_cpus: int) -> CpuFigures:
    """The node's CPU use between two readings, of its allowed CPUs, and the cluster's share."""
    elapsed = max(after.when - before.when, 1e-6)
    capacity = allowed.capacity or machine_cpus or 1
    if allowed.limit and before.cgroup_seconds is not None and after.cgroup_seconds is not None:
        total = 100.0 * max(0.0, after.cgroup_seconds - before.cgroup_seconds) / (elapsed * capacity)
    elif before.stat is not None and after.stat is not None:
        total = stat_percent(before.stat, after.stat, allowed.ids, allowed.limit.cpus if allowed.limit else None)
    else:
        total = after.machine_percent or 0.0
    total = min(100.0, max(0.0, total))
    cluster = owner = None
    memory = after.processes.memory_bytes if after.processes is not None else None
    if before.processes is not None and after.processes is not None:
        cluster = min(100.0, 100.0 * cpu_seconds_between(before.processes, after.processes) / (elapsed * capacity))
        owner = max(0.0, total - cluster)
    pids = after.processes.pids if after.processes is not None else None
    return CpuFigures(total, allowed.cpu_count or machine_cpus, cluster, owner, memory, pids)


@hookimpl
def grid_metrics_sources():  # type: ignore[no-untyped-def]
    yield GridMetricsSource(name="psutil", summary="CPU, memory, swap, load and GPUs of this machine",
                            factory=PsutilSource)
