"""Offload and boost end to end: a real two-node Ray cluster started by grid, driven through the CLI.

Both nodes are this machine (two raylets, `local` transport): distinct hosts do not matter here,
and the head must be the machine the CLI and the CPU burners run on.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.local_pair import cli, ok_json, ray_driver, ray_program, script_metrics

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
INTERVAL = 1.0  # the offload interval of tests/local_pair.py


@pytest.fixture(scope="module")
def cluster(local_pair: dict[str, Any]) -> dict[str, Any]:
    return local_pair


WHERE_TASKS_RUN = """
@ray.remote(num_cpus=1)
def where():
    import time
    time.sleep(0.2)
    return ray.get_runtime_context().get_node_id()
ids = ray.get([where.remote() for _ in range(4)], timeout=60)
by_id = {v: k for k, v in nodes.items()}
print(json.dumps(sorted({by_id[i] for i in ids})))
"""


def wait_for(check: Any, timeout: float, step: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    return check()


def _settings(c: dict[str, Any]) -> dict[str, Any]:
    """The controller's status less its live rows."""
    return {k: v for k, v in ok_json(c, "offload", "auto", "--status").items() if k != "nodes"}


def test_bad_settings_change_nothing(cluster: dict[str, Any]) -> None:
    before = _settings(cluster)
    for args, message in ((["--threshold", "cpu=180"], "at most 100"), (["--threshold", "gpu=x"], "not a number"),
                          (["--policy", "nope"], "no offload policy named 'nope'")):
        result = cli(cluster, "offload", "auto", "--enable", *args)
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert _settings(cluster) == before
    assert cli(cluster, "offload", "auto").returncode == 2  # no mode


def _held(c: dict[str, Any]) -> dict[str, Any]:
    return dict(ok_json(c, "offload", "auto", "--status")["held"])


def test_scripted_load_holds_the_head_once_and_releases_it_after_the_cooldown(cluster: dict[str, Any]) -> None:
    """Hysteresis end to end on readings the test writes (tests/plugins/scripted-metrics), so the
    machine's own load cannot change the outcome."""
    began = time.time()
    ok_json(cluster, "offload", "auto", "--enable", "--threshold", "cpu=60")  # low mark: 45
    try:
        script_metrics(cluster, {"head": {"cpu_percent": 95.0, "memory_percent": 10.0}})
        assert wait_for(lambda: "head" in _held(cluster), timeout=30), ok_json(cluster, "offload", "auto", "--status")
        assert "cpu" in _held(cluster)["head"]["reason"]
        script_metrics(cluster, {"head": {"cpu_percent": 50.0, "memory_percent": 10.0}})  # between the marks
        time.sleep(4 * INTERVAL + 2.0)  # more than the window and the cooldown
        assert "head" in _held(cluster)
        script_metrics(cluster, {"head": {"cpu_percent": 5.0, "memory_percent": 10.0}})
        assert wait_for(lambda: "head" not in _held(cluster), timeout=30)
        time.sleep(3 * INTERVAL)  # no flapping afterwards
        events = ok_json(cluster, "offload", "auto", "--status")["events"]
        kinds = [e["kind"] for e in events if e["node"] == "head" and e["time"] >= began]
        assert kinds == ["hold", "release"], events
    finally:
        script_metrics(cluster, {})
        ok_json(cluster, "offload", "auto", "--disable")


def test_burner_holds_the_head_and_tasks_go_to_the_worker(cluster: dict[str, Any]) -> None:
    """The real path (psutil on a real burner). Every assertion holds on a busy machine too: a
    busy machine only holds the head sooner, and the release is asked for, not waited on."""
    enabled = ok_json(cluster, "offload", "auto", "--enable", "--threshold", "cpu=60")
    assert enabled["enabled"] is True and enabled["thresholds"]["cpu"] == 60
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        began = time.monotonic()
        held = wait_for(lambda: "head" in _held(cluster), timeout=30)
        assert held, ok_json(cluster, "offload", "auto", "--status")
        print(f"held {time.monotonic() - began:.1f} s after the burners started (interval {INTERVAL} s)")
        assert "cpu" in _held(cluster)["head"]["reason"]
        assert ray_program(cluster, WHERE_TASKS_RUN) == ["w1"]  # Ray itself keeps new work off the head
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    disabled = ok_json(cluster, "offload", "auto", "--disable")
    assert "head" not in disabled["held"]
    assert any(e["kind"] == "release" and e["node"] == "head" for e in disabled["events"][-3:]), disabled["events"]
    pinned = "r = ray.remote(num_cpus=1, resources={'grid-node-head': 0.001})(lambda: 1)\nprint(ray.get(r.remote()))"
    assert ray_program(cluster, pinned) == 1  # the head takes work again


def test_settings_and_holds_survive_a_service_restart(cluster: dict[str, Any]) -> None:
    ok_json(cluster, "offload", "auto", "--enable", "--threshold", "cpu=95", "--threshold", "memory=90")
    assert cli(cluster, "offload", "hold", "w1", "--reason", "disk swap").returncode == 0
    before = ray_program(cluster, """
        service = ray.get_actor("grid-service")
        print(json.dumps(ray.get(service.ready.remote())))
        ray.kill(service, no_restart=False)
        """)
    restarted = ok_json(cluster, "offload", "auto", "--status")  # the CLI waits for Ray's restart, or starts it
    after = ray_program(cluster, 'print(json.dumps(ray.get(ray.get_actor("grid-service").ready.remote())))')
    assert after != before  # a new process
    assert restarted["enabled"] is True and restarted["thresholds"]["cpu"] == 95
    assert restarted["held"]["w1"]["reason"] == "manual: disk swap" and restarted["held"]["w1"]["groups"]
    assert restarted["held"]["w1"]["manual"] is True
    assert cli(cluster, "offload", "release", "w1").returncode == 0
    assert "w1" not in ok_json(cluster, "offload", "auto", "--status")["held"]
    ok_json(cluster, "offload", "auto", "--disable")


def test_each_worker_has_an_agent_on_it_that_reports_its_readings(cluster: dict[str, Any]) -> None:
    """agent.py: the service places one on every worker; it reads its node where the node's own
    processes are visible, and the controller takes those readings instead of reading over SSH."""
    script_metrics(cluster, {"w1": {"cpu_percent": 42.0, "memory_percent": 21.0}})
    placed = ray_program(cluster, """
        import time
        deadline = time.time() + 60
        while True:
            try:
                agent = ray.get_actor("grid-agent-w1")
                print(json.dumps(ray.get(agent.ready.remote(), timeout=30) == nodes["w1"]))
                break
            except ValueError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        """)
    assert placed is True
    w1 = wait_for(lambda: next((n for n in ok_json(cluster, "offload", "auto", "--status")["nodes"]
                                if n["name"] == "w1" and n["cpu_percent"] == 42.0), None), timeout=30)
    assert w1["memory_percent"] == 21.0
    script_metrics(cluster, {})


def _available_cpu(c: dict[str, Any], node: str) -> float:
    rows = ok_json(c, "cluster", "status")["nodes"]
    return float(next(r for r in rows if r["name"] == node)["resources"]["CPU"]["available"])


def test_boost_reserves_on_the_worker_and_grid_run_uses_it(cluster: dict[str, Any]) -> None:
    before = _available_cpu(cluster, "w1")
    made = ok_json(cluster, "boost", "request", "head", "cpu", "1", "--priority", "high")
    assert (made["source"], made["target"], made["state"]) == ("w1", "head", "active")
    assert wait_for(lambda: _available_cpu(cluster, "w1") == before - 1, timeout=10)
    ran = cli(cluster, "run", "--", sys.executable, "-c", "print('in the boost')")
    assert ran.returncode == 0 and "in the boost" in ran.stdout
    job = ok_json(cluster, "jobs", "list")[-1]
    assert job["node"] == "w1"
    listed = ok_json(cluster, "boost", "list")
    assert [b["id"] for b in listed] == [made["id"]]
    assert set(listed[0]) >= {"id", "target", "source", "resource", "amount", "priority", "expires_at", "state"}
    assert cli(cluster, "boost", "release", made["id"]).returncode == 0
    assert wait_for(lambda: _available_cpu(cluster, "w1") == before, timeout=10)
    again = cli(cluster, "boost", "release", made["id"])
    assert again.returncode != 0 and "already released" in again.stderr


def test_boosts_expire(cluster: dict[str, Any]) -> None:
    made = ok_json(cluster, "boost", "request", "head", "cpu", "1", "--duration", "2s")
    assert made["expires_at"] is not None
    state = wait_for(lambda: next(b["state"] for b in ok_json(cluster, "boost", "status") if b["id"] == made["id"])
                     == "expired", timeout=20)
    assert state


def test_a_held_head_lowers_the_cluster_s_work_there_at_once_and_raises_it_on_release(
        cluster: dict[str, Any]) -> None:
    """grid_core/priority.py on the real thing: a CPU job already running on the head drops to
    the lowest priority (its session's autogroup too) when the head is held, and gets it back."""
    from grid_core.priority import LOWEST, read_autogroup

    job_id = cli(cluster, "run", "-d", "--node", "head", "--", sys.executable, "-c", "while True: pass").stdout.strip()
    actor = ray_program(cluster, SPINNER)  # an actor on the head, which Ray would not restart
    try:
        pid = wait_for(lambda: _job(cluster, job_id).get("pid"), timeout=30)
        before = os.getpriority(os.PRIO_PROCESS, pid)  # Ray starts its workers at nice 15
        assert before < LOWEST and read_autogroup(pid) in (None, 0)
        assert cli(cluster, "offload", "hold", "head", "--reason", "owner busy").returncode == 0
        assert wait_for(lambda: os.getpriority(os.PRIO_PROCESS, pid) == LOWEST, timeout=10 * INTERVAL)
        assert wait_for(lambda: read_autogroup(pid) in (None, LOWEST), timeout=10 * INTERVAL)  # its session's too
        assert wait_for(lambda: os.getpriority(os.PRIO_PROCESS, actor) == LOWEST, timeout=10 * INTERVAL)
        head = wait_for(lambda: next((n for n in ok_json(cluster, "offload", "auto", "--status")["nodes"]
                                      if n["name"] == "head" and n["step"] == "lowered"), None), timeout=10)
        assert head["lowered"] >= 2 and head["hold"] == "manual: owner busy"
        assert cli(cluster, "offload", "release", "head").returncode == 0
        assert wait_for(lambda: os.getpriority(os.PRIO_PROCESS, pid) == before, timeout=10 * INTERVAL)  # as root
        assert wait_for(lambda: read_autogroup(pid) in (None, 0), timeout=10 * INTERVAL)
        assert wait_for(lambda: os.getpriority(os.PRIO_PROCESS, actor) == before, timeout=10 * INTERVAL)
        # Lowered, never killed: the same actor process answers.
        assert ray_program(cluster, 'print(json.dumps(ray.get(ray.get_actor("grid-test-spinner").pid.remote())))') \
            == actor
    finally:
        cli(cluster, "offload", "release", "head")
        cli(cluster, "jobs", "stop", job_id)
        ray_program(cluster, 'ray.kill(ray.get_actor("grid-test-spinner"))\nprint("null")')


SPINNER = """
    @ray.remote(num_cpus=0, resources={"grid-node-head": 0.001}, max_restarts=0)
    class Spinner:
        def pid(self):
            import os
            return os.getpid()
    spinner = Spinner.options(name="grid-test-spinner", lifetime="detached").remote()
    print(json.dumps(ray.get(spinner.pid.remote())))
    """


EVICTED = """
    import os, time
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def spin(seconds):
        end = time.time() + seconds
        while time.time() < end:
            pass
        return [ray.get_runtime_context().get_node_id(), os.getpid()]

    @ray.remote(num_cpus=1, max_retries=3)
    def long_task(seconds):
        return spin(seconds)

    @ray.remote(num_cpus=1, max_retries=0)
    def keep_once(seconds):
        return spin(seconds)

    # Ray places the first on this driver's node, the empty head, as it would any task; the
    # second follows it there. A retry of the first goes where Ray finds room.
    refs = [long_task.remote(12),
            keep_once.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nodes["head"], soft=True)).remote(12)]
    by_id = {v: k for k, v in nodes.items()}
    print(json.dumps([by_id[node] for node, _pid in ray.get(refs, timeout=120)]))
    """


def test_a_held_head_evicts_its_tasks_after_evict_after_and_keeps_actors_and_named_tasks(
        cluster: dict[str, Any]) -> None:
    """The last step: after `evict_after` the task Ray will retry is stopped and runs again on the
    worker; the actor and the task named in never_evict (max_retries=0) stay, lowered."""
    config = Path(cluster["config"])
    before = config.read_text()
    config.write_text(before + 'evict_after = 3.0\nnever_evict = ["keep_*"]\n')  # under [offload]
    actor = ray_program(cluster, SPINNER)
    argv, env = ray_driver(cluster, EVICTED)
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def head() -> dict[str, Any]:
            return next(n for n in ok_json(cluster, "offload", "auto", "--status")["nodes"] if n["name"] == "head")

        assert wait_for(lambda: len(_titled(("ray::long_task", "ray::keep_once"))) == 2, timeout=60)
        assert cli(cluster, "offload", "hold", "head", "--reason", "owner busy").returncode == 0
        def rows() -> dict[str, tuple[str, str]]:
            found = {w["name"]: (w["kind"], w["action"]) for w in head()["work"]}
            return found if {"keep_once", "Spinner"} <= set(found) else {}

        kept = wait_for(rows, timeout=10)
        assert kept["keep_once"] == ("task", "kept") and kept["Spinner"] == ("actor", "kept"), kept
        out, err = driver.communicate(timeout=90)
        events = ok_json(cluster, "offload", "auto", "--status")["events"]
        assert driver.returncode == 0, (err[-2000:], events[-8:])
        assert json.loads(out.strip().splitlines()[-1]) == ["w1", "head"]  # evicted, then run on w1; kept
        reasons = [e["reason"] for e in ok_json(cluster, "offload", "auto", "--status")["events"]
                   if e["kind"] == "evict"]
        assert any(r.startswith("evicted task long_task") and r.endswith("runs again on w1") for r in reasons), reasons
        assert ray_program(cluster, 'print(json.dumps(ray.get(ray.get_actor("grid-test-spinner").pid.remote())))') \
            == actor  # lowered, never killed
    finally:
        driver.kill()
        cli(cluster, "offload", "release", "head")
        config.write_text(before)
        ray_program(cluster, 'ray.kill(ray.get_actor("grid-test-spinner"))\nprint("null")')


def _titled(titles: tuple[str, ...]) -> list[int]:
    """The pids of this machine's processes whose title starts with one of `titles`."""
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"]) if " ".join(p.info["cmdline"] or ()).startswith(titles)]


def test_the_cluster_s_own_load_alone_never_holds_the_head(cluster: dict[str, Any]) -> None:
    """psutil on the real thing: two CPU jobs fill this machine, and the head's readings count
    them as the cluster's, not the owner's, so the policy does not hold it."""
    script_metrics(cluster, {})  # every node reads the machine
    ok_json(cluster, "offload", "auto", "--enable", "--threshold", "cpu=90")
    jobs = [cli(cluster, "run", "-d", "--node", "head", "--", sys.executable, "-c", "while True: pass").stdout.strip()
            for _ in range(2)]
    try:
        def loaded() -> dict[str, Any] | None:
            rows = ok_json(cluster, "offload", "auto", "--status")["nodes"]
            head = next(n for n in rows if n["name"] == "head")
            return head if (head["cluster_cpu_percent"] or 0) > 60 else None

        head = wait_for(loaded, timeout=30)
        assert head["owner_cpu_percent"] < head["cluster_cpu_percent"], head
        time.sleep(5 * INTERVAL)  # more than the policy's window of readings
        status = ok_json(cluster, "offload", "auto", "--status")
        assert "head" not in status["held"], status["events"][-5:]
    finally:
        for job_id in jobs:
            cli(cluster, "jobs", "stop", job_id)
        ok_json(cluster, "offload", "auto", "--disable")


def _job(c: dict[str, Any], job_id: str) -> dict[str, Any]:
    return next(j for j in ok_json(c, "jobs", "list") if j["id"] == job_id)  # type: ignore[no-any-return]


def test_a_boost_that_expires_stops_the_job_inside_and_its_record_ends(cluster: dict[str, Any]) -> None:
    made = ok_json(cluster, "boost", "request", "head", "cpu", "1", "--source", "w1", "--duration", "8s")
    job_id = cli(cluster, "run", "-d", "--", "sleep", "300").stdout.strip()
    job = _job(cluster, job_id)
    assert (job["node"], job["boost"]) == ("w1", made["group"])  # grid run used the boost lent to the head
    began = time.monotonic()
    followed = cli(cluster, "jobs", "logs", job_id, "--follow", timeout=90)  # returns once the boost ends it
    assert time.monotonic() - began < 60 and followed.returncode == 128 + signal.SIGTERM, followed.stderr
    job = _job(cluster, job_id)
    assert job["state"] == "stopped" and made["group"] in job["reason"], job
    assert next(b for b in ok_json(cluster, "boost", "status") if b["id"] == made["id"])["state"] == "expired"


def test_settings_holds_and_boosts_survive_a_cluster_stop_and_start(cluster: dict[str, Any]) -> None:
    ok_json(cluster, "offload", "auto", "--enable", "--threshold", "cpu=91")
    made = ok_json(cluster, "boost", "request", "head", "cpu", "1", "--source", "w1", "--duration", "30m")
    assert cli(cluster, "offload", "hold", "w1", "--reason", "kept").returncode == 0  # reserves w1's other CPU
    stopped = cli(cluster, "cluster", "stop")
    assert stopped.returncode == 0, stopped.stderr
    started = cli(cluster, "cluster", "start")
    assert started.returncode == 0, started.stderr
    said = " ".join(started.stderr.split())  # rich wraps lines
    assert "1 hold(s) and 1 boost(s) recovered" in said, started.stderr  # start says what it restored
    status = ok_json(cluster, "offload", "auto", "--status")
    assert status["thresholds"]["cpu"] == 91 and status["origin"]["high.cpu"] == "run time"
    assert status["held"]["w1"]["reason"] == "manual: kept"
    assert [b["id"] for b in status["boosts"] if b["state"] == "active"] == [made["id"]]
    assert wait_for(lambda: _available_cpu(cluster, "w1") == 0, timeout=20)  # hold and boost reserved again
    assert cli(cluster, "boost", "release", made["id"]).returncode == 0
    assert cli(cluster, "offload", "release", "w1").returncode == 0
    ok_json(cluster, "offload", "auto", "--disable")


def test_impossible_boost_fails_cleanly(cluster: dict[str, Any]) -> None:
    before = ok_json(cluster, "boost", "status")
    for args, message in ((["head", "cpu", "64"], "no node can lend 64 cpu"), (["head", "disk", "1"], "disk"),
                          (["head", "cpu", "1", "--source", "nowhere"], "no node named 'nowhere'"),
                          (["head", "cpu", "1", "--duration", "soon"], "duration 'soon'")):
        result = cli(cluster, "boost", "request", *args)
        assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert ok_json(cluster, "boost", "status") == before


def test_scan_finds_a_busy_process_and_move_restarts_it_on_a_worker(cluster: dict[str, Any], tmp_path: Path) -> None:
    script, stop = tmp_path / "busy.py", tmp_path / "stop"
    script.write_text("import os, sys\nwhile not os.path.exists(sys.argv[1]): pass\nprint('busy work done')\n")
    original = subprocess.Popen([sys.executable, str(script), str(stop)], cwd=tmp_path)
    try:
        time.sleep(1.0)
        found = ok_json(cluster, "offload", "scan")
        mine = next(p for p in found if p["pid"] == original.pid)
        assert mine["cpu_percent"] > 20 and mine["kind"] == "python" and "cpu" in mine["why"]
        move = subprocess.Popen([sys.executable, "-m", "grid_core", "offload", "move", str(original.pid), "--to", "w1",
                                 "--stop-original"], env={**os.environ, **cluster["env"]}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert original.wait(timeout=60) == -signal.SIGTERM  # stopped once the copy was running
        stop.touch()  # now the copy (the same command, restarted on w1) may finish
        out, err = move.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            original.kill()
        stop.touch()
    assert move.returncode == 0, err
    assert "restarting (not live-migrating)" in err and "busy work done" in out
    job = ok_json(cluster, "jobs", "list")[-1]
    assert job["node"] == "w1" and job["argv"][-2:] == [str(script), str(stop)] and job["state"] == "succeeded"


def test_watch_draws_a_running_job_a_boost_and_a_hold_and_quits_on_q(cluster: dict[str, Any]) -> None:
    boost = ok_json(cluster, "boost", "request", "w1", "cpu", "1", "--source", "head")
    job_id = cli(cluster, "run", "-d", "--node", "head", "--", "sleep", "120").stdout.strip()
    assert cli(cluster, "offload", "hold", "w1", "--reason", "watch test").returncode == 0
    parent, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "grid_core", "offload", "watch", "--interval", "0.5"],
                            stdin=child, stdout=child, stderr=child, env={**os.environ, **cluster["env"],
                                                                           "COLUMNS": "160", "LINES": "50"})
    os.close(child)
    screen = b""
    try:
        deadline = time.monotonic() + 60
        wanted = (b"watch test", b"held", job_id.encode(), boost["id"].encode())
        while time.monotonic() < deadline and not all(w in screen for w in wanted):
            if select.select([parent], [], [], 0.5)[0]:
                screen += os.read(parent, 65536)
        os.write(parent, b"q")
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(parent)
        cli(cluster, "offload", "release", "w1")
        cli(cluster, "jobs", "stop", job_id)
        cli(cluster, "boost", "release", boost["id"])
    text = screen.decode(errors="replace")
    assert all(w.decode() in text for w in wanted) and "grid offload" in text, text[-3000:]


def test_an_in_house_policy_is_pip_installed_and_selected(cluster: dict[str, Any]) -> None:
    """examples/offload-policy, installed into the environment the cluster runs from."""
    from tests.conftest import REPO

    pip = [sys.executable, "-m", "pip"]
    example = str(REPO / "examples" / "offload-policy")
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-build-isolation", example], check=True,
                   capture_output=True)
    try:
        listed = {p["name"]: p for p in ok_json(cluster, "plugins", "list")}
        assert listed["loadavg"]["hooks"] == {"grid_offload_policies": ["loadavg"]}
        status = ok_json(cluster, "offload", "auto", "--enable", "--policy", "loadavg")
        assert status["policy"] == "loadavg" and status["enabled"] is True
        decided = wait_for(lambda: (ok_json(cluster, "offload", "auto", "--status").get("decision") or {})
                           .get("reason", "").startswith("load "), timeout=30)
        assert decided  # the controller asked the new policy
    finally:
        cli(cluster, "offload", "auto", "--enable", "--policy", "threshold")
        cli(cluster, "offload", "auto", "--disable")
        subprocess.run([*pip, "uninstall", "-q", "-y", "grid-policy-loadavg"], check=True, capture_output=True)
