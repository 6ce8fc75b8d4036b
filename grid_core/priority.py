"""Lowering the cluster's processes on the owner's machine while it is held, and raising them back.

Two knobs, both needed. A process's nice value, and, where the kernel shares CPU time out by
session first (`kernel.sched_autogroup_enabled = 1`, the default on many desktops), its session's
autogroup nice: without that, a lower nice value changes nothing against the owner's programs in
other sessions (TESTBED.md section 3a measured a 10 ms probe at 16.8 ms beside a burner, 16.6 ms
after `renice 19`, 8.5 ms after writing 19 to the burner's /proc/PID/autogroup). The caller names
only sessions that hold nothing but the cluster's processes, so the owner's own are never touched.

Raising a priority back needs CAP_SYS_NICE (root has it): without it, `restore` says so and a
lowered process keeps its low priority until it ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping, Sequence

import attrs

from grid_core.record import record

LOWEST = 19


@record
class Lowered:
    """A process, or a session's autogroup, that grid lowered, with its value before."""

    pid: int  # the process; for a session, the member its autogroup was written through
    started: float  # that process's start time: a pid reused by another process is never touched
    before: int


def read_autogroup(pid: int) -> int | None:
    """The autogroup nice of pid's session ("/autogroup-123 nice 0"), or None where there is none."""
    try:
        with open(f"/proc/{pid}/autogroup") as f:
            return int(f.read().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _write_autogroup(pid: int, nice: int) -> None:
    with open(f"/proc/{pid}/autogroup", "w") as f:
        f.write(str(nice))


def _started(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


@attrs.define
class Lowering:
    """What is lowered on this machine now; `lower` again each interval catches new processes."""

    processes: dict[int, Lowered] = attrs.Factory(dict)
    sessions: dict[int, Lowered] = attrs.Factory(dict)  # by session id

    def __len__(self) -> int:
        return len(self.processes)

    def lower(self, pids: Iterable[int], sessions: Mapping[int, Sequence[int]]) -> None:
        """The lowest priority for each process, and for each session (id: its member pids)."""
        # Sessions first: once a process shows its low nice value, its session is low too.
        for sid, members in sessions.items():
            for pid in members if sid not in self.sessions else ():
                group, started = read_autogroup(pid), _started(pid)
                if group is None or started is None:
                    continue
                with contextlib.suppress(OSError):
                    _write_autogroup(pid, LOWEST)
                    self.sessions[sid] = Lowered(pid, started, group)
                    break
        for pid in pids:
            started = _started(pid)
            if pid in self.processes or started is None:
                continue
            with contextlib.suppress(OSError):  # ended, or not ours
                before = os.getpriority(os.PRIO_PROCESS, pid)
                os.setpriority(os.PRIO_PROCESS, pid, LOWEST)
                self.processes[pid] = Lowered(pid, started, before)

    def restore(self) -> list[str]:
        """Give what is still running its priority back; why some could not be raised."""
        problems = []
        for kind, lowered in (("process", self.processes), ("session", self.sessions)):
            for key, low in lowered.items():
                if _started(low.pid) != low.started:
                    continue  # it has ended
                try:
                    if kind == "process":
                        os.setpriority(os.PRIO_PROCESS, low.pid, low.before)
                    else:
                        _write_autogroup(low.pid, low.before)
                except OSError as exc:
                    problems.append(f"{kind} {key} keeps its low priority until it ends: raising it needs "
                                    f"CAP_SYS_NICE ({exc.strerror or exc})")
        self.processes.clear()
        self.sessions.clear()
        return problems


def sessions_of(pids: Iterable[int], everyone: Iterable[int]) -> dict[int, list[int]]:
    """The sessions (id: members) whose every process is among `pids`."""
    mine = set(pids)
    members: dict[int, list[int]] = {}
    foreign: set[int] = set()
    for pid in everyone:
        try:
            sid = os.getsid(pid)
        except OSError:
            continue
        if pid in mine:
            members.setdefault(sid, []).append(pid)
        else:
            foreign.add(sid)
    return {sid: pids for sid, pids in members.items() if sid not in foreign}
