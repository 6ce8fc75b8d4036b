"""The CPUs a node may use, and its CPU use as a share of them, not of the whole machine.

A node in a container, a Slurm cpuset or a test host pinned with `taskset` may run on only some of
the machine's CPUs (its affinity, `os.sched_getaffinity`) and under a CPU quota (cgroup v2
`cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`). /proc/stat is machine-wide, so the
node's CPU use is read from the `cpuN` lines of its allowed CPUs, or, under a quota, from its
cgroup's own usage counter, as a share of min(allowed CPUs, quota).

Everything here that parses is a pure function of recorded text, so it is tested without a node;
`read_allowed_cpus` is the one reader of the live files.
"""

from __future__ import annotations

import contextlib
import math
import os
import posixpath
from collections.abc import Callable, Collection, Iterable
from typing import NamedTuple

CGROUP_ROOT = "/sys/fs/cgroup"
V1_CPU_MOUNTS = ("cpu,cpuacct", "cpu", "cpuacct,cpu")


def _is_count(field: str) -> bool:
    return field.isascii() and field.isdigit()


def parse_cpu_list(text: str) -> frozenset[int]:
    """`0-3,8,10-11` (Linux's list format: `Cpus_allowed_list`, cpuset.cpus) as CPU ids;
    ValueError for anything else."""
    ids: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        low, sep, high = part.partition("-")
        if not _is_count(low) or (sep and not _is_count(high)):
            raise ValueError(f"not a CPU list: {text.strip()[:80]!r}")
        first, last = int(low), int(high) if sep else int(low)
        if last < first or last - first > 1 << 16:
            raise ValueError(f"not a CPU list: {text.strip()[:80]!r}")
        ids.update(range(first, last + 1))
    return frozenset(ids)


def stat_times(lines: Iterable[str]) -> dict[int | None, tuple[int, int]]:
    """(total, idle) jiffies per CPU id from /proc/stat lines, the aggregate `cpu` line under
    None; malformed cpu lines are left out (the caller notices what it needs is missing)."""
    times: dict[int | None, tuple[int, int]] = {}
    for line in lines:
        if not line.startswith("cpu"):
            continue
        name, *rest = line.split()
        key: int | None
        if name == "cpu":
            key = None
        elif _is_count(name[3:]):
            key = int(name[3:])
        else:
            continue
        fields = rest[:8]  # user nice system idle iowait irq softirq steal; guest is inside user
        if len(fields) < 4 or not all(_is_count(f) for f in fields):
            continue
        values = [int(f) for f in fields]
        times[key] = (sum(values), values[3] + (values[4] if len(values) > 4 else 0))
    return times


def busy_share(before: dict[int | None, tuple[int, int]], after: dict[int | None, tuple[int, int]],
               cpus: Collection[int] | None = None) -> float | None:
    """The busy fraction (0-1) between two readings: over the CPUs `cpus` (their `cpuN` lines;
    ids missing from a reading, such as an offline CPU, are skipped), or the aggregate line when
    None. None when nothing could be measured (no such line, or no tick passed)."""
    keys: Iterable[int | None] = [None] if cpus is None else sorted(cpus)
    elapsed = busy = 0
    for key in keys:
        if key not in before or key not in after:
            continue
        total = after[key][0] - before[key][0]
        if total <= 0:  # no tick passed on this CPU, or its counters went backwards
            continue
        idle = min(max(after[key][1] - before[key][1], 0), total)
        elapsed += total
        busy += total - idle
    return busy / elapsed if elapsed > 0 else None


def stat_percent(before: str, after: str, cpus: Collection[int] | None = None, capacity: float | None = None) -> float:
    """CPU use in percent between two /proc/stat texts, of the CPUs `cpus` (None: all of them).
    `capacity` (a cgroup quota in CPUs, below len(cpus)) scales the busy share to the quota.
    0.0 when nothing could be measured; at most 100."""
    share = busy_share(stat_times(before.splitlines()), stat_times(after.splitlines()), cpus)
    if share is None:
        return 0.0
    if cpus and capacity is not None and 0 < capacity < len(cpus):
        share *= len(cpus) / capacity
    return min(100.0, 100.0 * share)


# --------------------------------------------------------------------------- cgroup CPU limits


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 `cpu.max` (`150000 100000`, or `max 100000`) as CPUs, None without a limit."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    period = fields[1] if len(fields) > 1 else "100000"
    if not _is_count(fields[0]) or not _is_count(period) or int(period) == 0:
        raise ValueError(f"not a cpu.max: {text.strip()[:80]!r}")
    return int(fields[0]) / int(period)


def parse_cfs_quota(quota: str, period: str) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` as CPUs, None without a limit (-1)."""
    q, p = quota.strip(), period.strip()
    if q.startswith("-"):
        return None
    if not _is_count(q) or not _is_count(p) or int(p) == 0:
        raise ValueError(f"not a CFS quota: {q[:40]!r} / {p[:40]!r}")
    return int(q) / int(p)


class CgroupLimit(NamedTuple):
    cpus: float  # the quota, in CPUs
    usage_file: str  # the limiting cgroup's usage counter: v2 cpu.stat, v1 cpuacct.usage


def _lineage(path: str) -> list[str]:
    """A cgroup path and its ancestors, deepest first, up to the root '/'."""
    path = "/" + posixpath.normpath("/" + path.strip()).lstrip("/")  # normpath keeps a leading '//'
    out = [path]
    while path != "/":
        path = posixpath.dirname(path)
        out.append(path)
    return out


def cgroup_cpu_limit(proc_self_cgroup: str, read: Callable[[str], str | None],
                     root: str = CGROUP_ROOT) -> CgroupLimit | None:
    """The tightest CPU quota over this process's cgroup and its ancestors, or None.

    `proc_self_cgroup` is /proc/self/cgroup's text; `read(path)` returns a file's text, or None
    where it is missing. A cgroup path that is not under the mount (a container without its own
    cgroup namespace sees its host's path) is looked up from the mount's root instead."""
    best: CgroupLimit | None = None

    def consider(cpus: float | None, usage_file: str) -> None:
        nonlocal best
        if cpus is not None and cpus > 0 and (best is None or cpus < best.cpus):
            best = CgroupLimit(cpus, usage_file)

    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2's unified hierarchy
            for cg in _lineage(path):
                d = posixpath.join(root, cg.lstrip("/")).rstrip("/")
                text = read(posixpath.join(d, "cpu.max"))
                if text is not None:
                    with contextlib.suppress(ValueError):
                        consider(parse_cpu_max(text), posixpath.join(d, "cpu.stat"))
        elif "cpu" in controllers.split(","):
            for mount in V1_CPU_MOUNTS:
                for cg in _lineage(path):
                    d = posixpath.join(root, mount, cg.lstrip("/")).rstrip("/")
                    quota = read(posixpath.join(d, "cpu.cfs_quota_us"))
                    period = read(posixpath.join(d, "cpu.cfs_period_us"))
                    if quota is not None and period is not None:
                        with contextlib.suppress(ValueError):
                            consider(parse_cfs_quota(quota, period), posixpath.join(d, "cpuacct.usage"))
    return best


def parse_cgroup_usage(path: str, text: str) -> float | None:
    """CPU seconds a cgroup has used, from v2 `cpu.stat` (usage_usec) or v1 `cpuacct.usage` (ns)."""
    if path.endswith("cpu.stat"):
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec" and _is_count(value.strip()):
                return int(value.strip()) / 1e6
        return None
    value = text.strip()
    return int(value) / 1e9 if _is_count(value) else None


# --------------------------------------------------------------------------- the live readings


def _read_file(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


class AllowedCpus(NamedTuple):
    """What this process may run on: CPU ids (None where the platform cannot say) and a cgroup
    quota (None without one)."""

    ids: frozenset[int] | None
    limit: CgroupLimit | None

    @property
    def capacity(self) -> float | None:
        """CPUs' worth of time per second the node can use: min(allowed CPUs, quota)."""
        counts = [c for c in (len(self.ids) if self.ids else None, self.limit.cpus if self.limit else None)
                  if c is not None]
        return min(counts) if counts else None

    @property
    def cpu_count(self) -> int | None:
        """The allowed CPUs as a whole number (a quota of 1.5 CPUs counts as 2)."""
        capacity = self.capacity
        return None if capacity is None else max(1, math.ceil(capacity - 1e-9))


def read_allowed_cpus() -> AllowedCpus:
    """This process's affinity and its cgroup's CPU quota (Linux; elsewhere both None)."""
    try:
        ids: frozenset[int] | None = frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        ids = None
    text = _read_file("/proc/self/cgroup")
    limit = cgroup_cpu_limit(text, _read_file) if text else None
    return AllowedCpus(ids, limit)


def cgroup_usage_seconds(limit: CgroupLimit) -> float | None:
    text = _read_file(limit.usage_file)
    return None if text is None else parse_cgroup_usage(limit.usage_file, text)
