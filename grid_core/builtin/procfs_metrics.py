"""The `procfs` metrics source: a Linux node's readings over any transport, one command per sample.

One `sh -c` reads /proc/stat twice around a short sleep (CPU use is a difference of counters),
then /proc/meminfo, /proc/loadavg, the CPUs the command may run on (its affinity, which sshd and
so everything started over SSH inherit: a node pinned with taskset or a cpuset) and nvidia-smi
when it is installed, each under a marker line. CPU use and the count are of those allowed CPUs
(their `cpuN` lines), not of the whole machine; a sample without the affinity line reads all.
The parser is a pure function of that text, so it is tested without a node. Nodes on the `local`
transport are left to `psutil`, which reads the same figures without a subprocess.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterator
from typing import TYPE_CHECKING

from grid_core.errors import GridError
from grid_core.hookspecs import hookimpl
from grid_core.metrics import NVIDIA_SMI_QUERY, parse_nvidia_smi
from grid_core.node_cpus import busy_share, parse_cpu_list, stat_times
from grid_core.types import GpuReading, GridMetricsSource, NodeMetrics, Transport

if TYPE_CHECKING:
    from grid_core.config import NodeConfig

SAMPLE_SECONDS = 0.2
SAMPLE_TIMEOUT = 15.0
NOT_LINUX = 3  # the script's exit status on a node without /proc: the source does not apply there
SECTIONS = ("stat", "meminfo", "loadavg", "gpu", "allowed")
PER_CPU_LINE = re.compile(r"^cpu\d+\s")

SAMPLE_SCRIPT = f"""\
[ -r /proc/stat ] || exit {NOT_LINUX}
echo @stat; grep '^cpu' /proc/stat
sleep {SAMPLE_SECONDS}
echo @stat; grep '^cpu' /proc/stat
echo @meminfo; cat /proc/meminfo
echo @loadavg; cat /proc/loadavg
echo @allowed; grep '^Cpus_allowed_list:' /proc/self/status 2>/dev/null
if command -v nvidia-smi >/dev/null 2>&1; then echo @gpu; {shlex.join(NVIDIA_SMI_QUERY)} 2>/dev/null; fi
exit 0
"""
SAMPLE_ARGV = ["sh", "-c", SAMPLE_SCRIPT]


class ProcfsFormatError(GridError):
    """The sample's text is not what Linux's /proc gives; the message says which part."""


def parse_procfs(text: str) -> NodeMetrics:
    """NodeMetrics from the output of SAMPLE_SCRIPT, or ProcfsFormatError saying what is wrong."""
    sections = _sections(text)
    try:
        stats = sections.get("stat", [])
        if len(stats) != 2:
            raise ProcfsFormatError(f"expected two /proc/stat readings, got {len(stats)}")
        allowed = _allowed(sections.get("allowed", []))
        cpu_percent = _cpu_percent(_cpu_times(stats[0]), _cpu_times(stats[1]))
        per_cpu = sum(1 for line in stats[1] if PER_CPU_LINE.match(line))
        if allowed is not None:
            before, after = stat_times(stats[0]), stat_times(stats[1])
            present = allowed & {k for k in after if k is not None}
            if present:
                share = busy_share(before, after, present)
                cpu_percent = 100.0 * share if share is not None else 0.0
                per_cpu = len(present)
        memory_percent, swap_percent, memory_total = _memory(_meminfo(_only(sections, "meminfo")))
        return NodeMetrics(
            source="procfs",
            cpu_percent=cpu_percent,
            memory_percent=memory_percent,
            swap_percent=swap_percent,
            load1=_load1(_only(sections, "loadavg")),
            cpu_count=per_cpu,
            memory_total_bytes=memory_total,
            gpus=_gpus(sections.get("gpu", [])),
        )
    except (ValueError, ArithmeticError) as exc:  # a number no /proc writes: too large, not finite
        raise ProcfsFormatError(f"unreadable /proc figures: {exc}") from None


def _sections(text: str) -> dict[str, list[list[str]]]:
    """Lines under each `@name` marker; a name may repeat (stat does)."""
    sections: dict[str, list[list[str]]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("@") and line[1:].strip() in SECTIONS:
            current = []
            sections.setdefault(line[1:].strip(), []).append(current)
        elif current is not None:
            current.append(line)
    return sections


def _allowed(found: list[list[str]]) -> frozenset[int] | None:
    """The allowed CPU ids from `Cpus_allowed_list:` (None where it is missing or unreadable)."""
    for line in (found[-1] if found else []):
        name, _, value = line.partition(":")
        if name.strip() == "Cpus_allowed_list":
            try:
                return parse_cpu_list(value) or None
            except ValueError:
                return None
    return None


def _only(sections: dict[str, list[list[str]]], name: str) -> list[str]:
    found = sections.get(name, [])
    if len(found) != 1:
        raise ProcfsFormatError(f"expected one /proc/{name} reading, got {len(found)}")
    return found[0]


def _is_count(field: str) -> bool:
    return field.isascii() and field.isdigit()  # str.isdigit alone accepts '²', which int() refuses


def _cpu_times(lines: list[str]) -> tuple[int, int]:
    """(total, idle) jiffies from the aggregate `cpu` line of /proc/stat."""
    line = next((line for line in lines if line.startswith("cpu ")), None)
    if line is None:
        raise ProcfsFormatError("/proc/stat has no aggregate 'cpu' line")
    fields = line.split()[1:9]  # user nice system idle iowait irq softirq steal; guest is inside user
    if len(fields) < 4 or not all(_is_count(f) for f in fields):
        raise ProcfsFormatError(f"/proc/stat 'cpu' line is malformed: {line[:80]!r}")
    times = [int(f) for f in fields]
    return sum(times), times[3] + (times[4] if len(times) > 4 else 0)


def _cpu_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    elapsed = after[0] - before[0]
    if elapsed <= 0:  # no tick passed, or the counters went backwards: nothing to measure
        return 0.0
    idle = min(max(after[1] - before[1], 0), elapsed)
    return 100.0 * (elapsed - idle) / elapsed


def _meminfo(lines: list[str]) -> dict[str, int]:
    """`MemTotal:  24000000 kB` lines as bytes by name; lines of other shapes are ignored."""
    values = {}
    for line in lines:
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and _is_count(parts[0]):
            values[name.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return values


def _memory(info: dict[str, int]) -> tuple[float, float, int]:
    """Memory in use and swap in use, in percent, and the memory total in bytes."""
    total = info.get("MemTotal", 0)
    if total <= 0:
        raise ProcfsFormatError("/proc/meminfo has no MemTotal")
    if "MemAvailable" in info:
        available = info["MemAvailable"]
    elif all(k in info for k in ("MemFree", "Buffers", "Cached")):  # kernels before 3.14
        available = info["MemFree"] + info["Buffers"] + info["Cached"]
    else:
        raise ProcfsFormatError("/proc/meminfo has neither MemAvailable nor MemFree, Buffers and Cached")
    used = total - min(available, total)
    swap_total, swap_free = info.get("SwapTotal", 0), info.get("SwapFree", 0)
    swap = 100.0 * (swap_total - min(swap_free, swap_total)) / swap_total if swap_total > 0 else 0.0
    return 100.0 * used / total, swap, total


def _load1(lines: list[str]) -> float:
    fields = " ".join(lines).split()
    try:
        load = float(fields[0])
    except (IndexError, ValueError):
        raise ProcfsFormatError(f"/proc/loadavg is malformed: {' '.join(lines)[:80]!r}") from None
    if not math.isfinite(load) or load < 0:
        raise ProcfsFormatError(f"/proc/loadavg holds an impossible load {fields[0]!r}")
    return load


def _gpus(found: list[list[str]]) -> tuple[GpuReading, ...]:
    """GPUs from nvidia-smi; readings that are not finite numbers are dropped, never fatal."""
    if not found:
        return ()
    try:
        gpus = parse_nvidia_smi("\n".join(found[-1]))
    except (ValueError, OverflowError):  # parse_nvidia_smi converts nan/inf MiB to int outside its guard
        return ()
    return tuple(g for g in gpus if math.isfinite(g.util_percent))


class ProcfsSource:
    """Samples a node through its transport; None for `local` nodes and nodes without /proc."""

    def sample(self, node: NodeConfig, transport: Transport) -> NodeMetrics | None:
        if node.transport_name == "local":
            return None
        result = transport.run(SAMPLE_ARGV, timeout=SAMPLE_TIMEOUT)
        if result.exit_status == NOT_LINUX:
            return None
        if result.exit_status != 0:
            detail = result.stderr.strip()[:200] or "no message"
            raise ProcfsFormatError(f"reading /proc on {node.name} failed (exit {result.exit_status}): {detail}")
        return parse_procfs(result.stdout)


@hookimpl
def grid_metrics_sources() -> Iterator[GridMetricsSource]:
    yield GridMetricsSource(name="procfs", summary="CPU, memory, swap, load and GPUs of Linux nodes over any transport",
                            factory=ProcfsSource)
