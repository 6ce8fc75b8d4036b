"""Lowering the cluster's processes while the head is held, and back (grid_core/priority.py), on
real processes of this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from grid_core.priority import LOWEST, Lowering, read_autogroup, sessions_of

AUTOGROUP = read_autogroup(os.getpid()) is not None


@pytest.fixture
def session() -> Iterator[subprocess.Popen[bytes]]:
    """A shell in a session of its own, with a sleeping child: two processes, one session."""
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not psutil.Process(proc.pid).children():
        time.sleep(0.01)
    yield proc
    os.killpg(proc.pid, 9)
    proc.wait()


def members(proc: subprocess.Popen[bytes]) -> list[int]:
    return [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children())]


def test_lowering_a_session_of_the_cluster_and_raising_it_back(session: subprocess.Popen[bytes]) -> None:
    pids = members(session)
    lowering = Lowering()
    lowering.lower(pids, sessions_of(pids, psutil.pids()))
    assert len(lowering) == 2 and all(os.getpriority(os.PRIO_PROCESS, p) == LOWEST for p in pids)
    if AUTOGROUP:
        assert read_autogroup(session.pid) == LOWEST
    assert read_autogroup(os.getpid()) in (None, 0)  # this session (the owner's) is untouched
    lowering.lower(pids, sessions_of(pids, psutil.pids()))  # the next interval: nothing twice
    assert len(lowering) == 2
    problems = lowering.restore()
    if os.geteuid() == 0:  # raising a priority needs CAP_SYS_NICE
        assert problems == []
        assert all(os.getpriority(os.PRIO_PROCESS, p) == 0 for p in pids)
        assert read_autogroup(session.pid) in (None, 0)
    else:
        assert problems and "CAP_SYS_NICE" in problems[0]
    assert len(lowering) == 0


def test_a_session_shared_with_the_owner_keeps_its_autogroup(session: subprocess.Popen[bytes]) -> None:
    cluster = [session.pid]  # its child is not the cluster's: the session is not the cluster's alone
    assert sessions_of(cluster, psutil.pids()) == {}
    lowering = Lowering()
    lowering.lower(cluster, sessions_of(cluster, psutil.pids()))
    assert os.getpriority(os.PRIO_PROCESS, session.pid) == LOWEST
    assert read_autogroup(session.pid) in (None, 0)
    lowering.restore()


def test_a_process_that_ended_is_not_touched_on_restore() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    lowering = Lowering()
    lowering.lower([proc.pid], {})
    proc.kill()
    proc.wait()
    assert lowering.restore() == []  # its pid may be anyone's by now
