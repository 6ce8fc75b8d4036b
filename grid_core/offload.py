"""Offload settings as users type them (`--threshold cpu=80`) and as policies receive them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from grid_core.config import METRICS, OffloadSettings
from grid_core.errors import GridError
from grid_core.record import record

if TYPE_CHECKING:
    from grid_core.types import OffloadInForce


def parse_thresholds(values: Sequence[str]) -> dict[str, float]:
    """`70` (memory, as in the seed) or `cpu=80`, `memory=65`, `gpu=90`, each a percentage."""
    marks: dict[str, float] = {}
    for value in values:
        metric, sep, number = value.partition("=")
        if not sep:
            metric, number = "memory", value
        metric = metric.strip().lower()
        if metric not in METRICS:
            raise GridError(f"--threshold {value!r}: unknown metric {metric!r} (use cpu, memory or gpu)")
        try:
            percent = float(number)
        except ValueError:
            raise GridError(f"--threshold {value!r}: {number.strip()!r} is not a number") from None
        if not math.isfinite(percent) or not 0 < percent <= 100:
            raise GridError(f"--threshold {value!r}: a percentage must be above 0 and at most 100")
        if metric in marks:
            raise GridError(f"--threshold {value!r}: {metric} is given twice")
        marks[metric] = percent
    return marks


LOW_BAND = 0.75  # a low-water mark stays at most this fraction of its high one when only the high is set


def banded_low(high: float, low: float) -> float:
    """The low-water mark to use beside a high one set on its own: lowered, never raised, so the
    hysteresis band stays (a low mark just under the high one would hold and release in turn)."""
    return min(low, high * LOW_BAND)


def file_values(offload: OffloadSettings) -> dict[str, Any]:
    """The config's offload settings as flat values: `enabled`, `policy`, `high.cpu`, `low.cpu`, ...,
    `interval_seconds`, `cooldown_seconds`, `window` (the keys of OffloadInForce.origin)."""
    values: dict[str, Any] = {"enabled": offload.enabled, "policy": offload.policy}
    for level, marks in (("high", offload.high), ("low", offload.low)):
        values.update({f"{level}.{m}": float(v) for m, v in attrs.asdict(marks).items()})
    values.update(interval_seconds=offload.interval_seconds, cooldown_seconds=offload.cooldown_seconds,
                  window=offload.window)
    return values


def policy_settings(settings: OffloadInForce, owner_idle_seconds: float | None = None,
                    evict_after: float | None = None) -> dict[str, Any]:
    """What a policy's factory receives: marks, window, cooldown, presence and eviction as plain
    data. The last two are the config's `offload.owner_idle_seconds` and `offload.evict_after`
    (None: presence off, never evict)."""
    return {
        "high": dict(settings.thresholds),
        "low": dict(settings.low),
        "window": settings.window,
        "cooldown_seconds": settings.cooldown_seconds,
        "interval_seconds": settings.interval_seconds,
        "owner_idle_seconds": owner_idle_seconds,
        "evict_after": evict_after,
    }


# --------------------------------------------------------------------------- moving processes

# Processes that are the machine's or the cluster's own plumbing, never worth moving.
SYSTEM_NAMES = frozenset({
    "systemd", "init", "sshd", "bash", "sh", "zsh", "fish", "tmux", "screen", "login", "sudo", "dbus-daemon",
    "raylet", "gcs_server", "plasma_store", "dashboard", "log_monitor", "monitor", "runtime_env_agent",
})
# Environment that belongs to this machine or session, not to the command being moved.
ENV_DROP_PREFIXES = ("SSH_", "XDG_", "DISPLAY", "WAYLAND", "DBUS_", "TERM", "TMUX", "STY", "WINDOWID", "SHLVL",
                     "OLDPWD", "PWD", "_", "RAY_", "GRID_", "HOSTNAME", "MAIL", "LS_COLORS", "COLORTERM")


@record
class Candidate:
    """A process on the head that could run elsewhere, and why it is listed."""

    pid: int
    name: str
    argv: tuple[str, ...]
    cwd: str
    cpu_percent: float
    memory_bytes: int
    gpu_memory_bytes: int
    age_seconds: float
    kind: str
    why: str


def _kind(name: str, argv: Sequence[str]) -> str:
    joined = " ".join(argv[:3]).lower()
    if name.startswith("ray::") or "ray/_private/workers" in joined:
        return "ray-worker"
    if "python" in name or "python" in joined:
        return "python"
    return "process"


def filtered_env(env: dict[str, str]) -> dict[str, str]:
    """The environment a moved command keeps: its own settings, not this machine's session."""
    return {k: v for k, v in env.items() if not k.startswith(ENV_DROP_PREFIXES) and k not in ("PATH", "HOME", "USER")}


def scan(sample_seconds: float = 0.5, min_cpu: float = 5.0, min_memory: int = 256 * 2**20,
         gpu_memory: dict[int, int] | None = None) -> list[Candidate]:
    """Processes on this machine worth moving: busy on CPU, big in memory, or on a GPU."""
    import os
    import time

    import psutil

    me = {os.getpid(), os.getppid()}
    procs = []
    for proc in psutil.process_iter(["pid", "name", "username"]):
        try:
            proc.cpu_percent(None)
            procs.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    time.sleep(sample_seconds)
    gpu_memory = gpu_memory or {}
    found = []
    for proc in procs:
        try:
            with proc.oneshot():
                name, argv = proc.name(), tuple(proc.cmdline())
                if not argv or proc.pid in me or name in SYSTEM_NAMES or name.startswith("ray::Idle"):
                    continue  # kernel threads have no argv
                cpu, rss = proc.cpu_percent(None), proc.memory_info().rss
                gpu = gpu_memory.get(proc.pid, 0)
                reasons = [r for r, hit in (
                    (f"cpu {cpu:.0f}%", cpu >= min_cpu), (f"memory {rss / 2**20:.0f} MiB", rss >= min_memory),
                    (f"gpu memory {gpu / 2**20:.0f} MiB", gpu > 0)) if hit]
                if not reasons:
                    continue
                found.append(Candidate(proc.pid, name, argv, proc.cwd(), cpu, rss, gpu,
                                       round(time.time() - proc.create_time(), 1), _kind(name, argv),
                                       ", ".join(reasons)))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return sorted(found, key=lambda c: (-c.cpu_percent, -c.gpu_memory_bytes, -c.memory_bytes))
