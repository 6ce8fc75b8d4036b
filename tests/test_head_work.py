"""head_work.py on real processes: which of the held head's workers are stopped, which are kept.

Ray's answers (which pids are actors, where an evicted task runs next) are given by the test; the
same code against a real cluster is tests/test_offload.py's eviction test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from grid_core.errors import GridError
from grid_plugin_ray_backend import head_work
from grid_plugin_ray_backend.head_work import Eviction, working

RUNNER = 4_194_305  # a grid job's runner: above any pid_max, so no process of this machine


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
             named.pid: (1, ["ray::checkpoint_once"]), RUNNER: (1, ["ray::JobRunner.run"])}
    workers = {task.pid: "train", actor.pid: "Spinner", named.pid: "checkpoint_once", RUNNER: "JobRunner.run"}
    monkeypatch.setattr(head_work, "actor_pids", lambda: {actor.pid, RUNNER})
    monkeypatch.setattr(head_work, "next_attempts", lambda pids: {})
    eviction = Eviction()
    rows, events, _ = eviction.step(table, workers, due=False, never_evict=["checkpoint_*"])
    assert {(r.name, r.kind, r.action) for r in rows} == {
        ("train", "task", "lowered"), ("Spinner", "actor", "kept"), ("checkpoint_once", "task", "kept"),
        ("JobRunner.run", "actor", "kept")}
    assert next(r for r in rows if r.pid == RUNNER).reason == "a grid job: its runner is an actor"
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


def test_ray_waits_before_a_retry_so_the_hold_reserves_the_freed_cpus_first() -> None:
    """Eviction relies on Ray's retry delay (layout.RETRY_DELAY_MS) on the head; a system config
    given in ray_start_params keeps its own values and its own delay."""
    from grid_core.config import structure
    from grid_plugin_ray_backend.layout import RETRY_DELAY_MS, ray_start_argv

    def system(params: dict[str, object]) -> dict[str, object]:
        config = structure({"nodes": [{"name": "h", "role": "head", "ray_start_params": params}, {"name": "w"}]}, "t")
        argv = ray_start_argv(config, config.head, python="python3", address="10.0.0.1", directory="/tmp/g",
                              head_address=None)
        [flag] = [a for a in argv if a.startswith("--system-config=")]
        worker = ray_start_argv(config, config.nodes[1], python="python3", address="10.0.0.2", directory="/tmp/g",
                                head_address="10.0.0.1:6379")
        assert not any(a.startswith("--system-config") for a in worker)  # the head's alone
        return json.loads(flag.partition("=")[2])  # type: ignore[no-any-return]

    assert system({}) == {"task_retry_delay_ms": RETRY_DELAY_MS}
    assert system({"system_config": '{"object_timeout_milliseconds": 5}'}) == {
        "object_timeout_milliseconds": 5, "task_retry_delay_ms": RETRY_DELAY_MS}
    assert system({"system_config": '{"task_retry_delay_ms": 500}'}) == {"task_retry_delay_ms": 500}
    for bad in ("{not json", "[1]"):
        with pytest.raises(GridError, match="system_config"):
            system({"system_config": bad})


def test_the_actor_table_is_read_for_new_workers_and_before_stopping_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GCS read each interval cost the owner's p95 (benchmarks/responsiveness.py), but an actor
    that appeared since the last read must never be taken for a task, shown or stopped."""
    reads: list[int] = []
    actors = {RUNNER}
    monkeypatch.setattr(head_work, "actor_pids", lambda: reads.append(1) or set(actors))
    eviction, named = Eviction(), ["keep_*"]
    eviction.step({}, {RUNNER: "JobRunner.run", RUNNER + 1: "keep_once"}, due=False, never_evict=named)
    eviction.step({}, {RUNNER: "JobRunner.run", RUNNER + 1: "keep_once"}, due=True, never_evict=named)
    assert len(reads) == 1  # nothing new, and nothing it would stop
    actors.add(RUNNER + 2)  # an actor started since
    rows, _, stopped = eviction.step({}, {RUNNER: "JobRunner.run", RUNNER + 2: "Spinner"}, due=True,
                                     never_evict=named)
    assert len(reads) == 2 and stopped == 0 and {r.kind for r in rows} == {"actor"}
    actors.add(RUNNER + 3)  # a worker seen as a task becomes an actor: read again before stopping it
    eviction.seen.add(RUNNER + 3)
    rows, _, stopped = eviction.step({}, {RUNNER + 3: "Trainer"}, due=True, never_evict=named)
    assert len(reads) == 3 and stopped == 0 and rows[0].action == "kept"
