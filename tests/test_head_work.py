"""head_work.py on real processes: which of the held head's workers are stopped, which are kept.

Ray's answers (which pids are actors, where an evicted task runs next) are given by the test; the
same code against a real cluster is tests/test_offload.py's eviction test.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from grid_plugin_ray_backend import head_work
from grid_plugin_ray_backend.head_work import Eviction, working


@pytest.fixture
def spinners() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def test_titles_name_the_work_and_grid_s_own_actors_are_spared() -> None:
    table = {1: (0, ["raylet"]), 2: (1, ["ray::IDLE"]), 3: (1, ["ray::train"]), 4: (1, ["ray::Spinner.pid"]),
             5: (1, ["ray::GridService.handle"]), 6: (3, ["python", "child.py"]), 7: (1, ["ray::Feed"])}
    assert working(table, set(table)) == {3: "train", 4: "Spinner.pid"}
    assert working(table, {2, 4}) == {4: "Spinner.pid"}  # only the cluster's processes


def test_tasks_are_stopped_once_due_and_actors_and_named_tasks_are_kept(
        spinners: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    task, actor, named = spinners
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    table = {task.pid: (1, ["ray::train"]), child.pid: (task.pid, ["python"]), actor.pid: (1, ["ray::Spinner"]),
             named.pid: (1, ["ray::checkpoint_once"])}
    workers = {task.pid: "train", actor.pid: "Spinner", named.pid: "checkpoint_once"}
    monkeypatch.setattr(head_work, "actor_pids", lambda: {actor.pid})
    monkeypatch.setattr(head_work, "next_attempts", lambda pids: {})
    eviction = Eviction()
    rows, events, _ = eviction.step(table, workers, due=False, never_evict=["checkpoint_*"])
    assert {(r.name, r.kind, r.action) for r in rows} == {
        ("train", "task", "lowered"), ("Spinner", "actor", "kept"), ("checkpoint_once", "task", "kept")}
    assert events == [] and all(p.poll() is None for p in (task, actor, named, child))

    rows, events, _ = eviction.step(table, workers, due=True, never_evict=["checkpoint_*"])
    assert task.wait(10) == -9 and child.wait(10) == -9  # the task's worker and what it started
    assert actor.poll() is None and named.poll() is None
    assert events == [f"evicted task train (pid {task.pid}); Ray runs it again on another node"]
    assert ("train", "evicted") in {(r.name, r.action) for r in rows}

    monkeypatch.setattr(head_work, "next_attempts", lambda pids: {task.pid: "gpu1"} if task.pid in pids else {})
    rows, events, _ = eviction.step({}, {}, due=True, never_evict=())
    assert events == [f"evicted task train (pid {task.pid}) runs again on gpu1"]
    assert rows == () and eviction.pending == []
