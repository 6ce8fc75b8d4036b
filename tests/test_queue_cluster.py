"""The lab's queue and the lab's people through the real CLI, from a machine that is not a node
(this one), against a Ray cluster on three real sshd test hosts: a head with 2 CPUs and two
workers with 1. root runs the cluster; the hosts also have the accounts ann, bob (in the group
`lab`) and eve, and its [access] lets in ann and the group. Each person's CLI logs in to the head
as themselves (member()).

One cluster serves the module; its job store is in the test bed's workdir (testbed.py). Jobs
write when they start into a file every host sees, so a test reads the order they ran in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import grid, takes_ctrl_c
from tests.testbed import Testbed, require_testbed

pytestmark = [pytest.mark.realhost, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
FINAL = ("succeeded", "failed", "stopped", "timeout", "lost")
LEASE = 6.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_testbed()
    root = tmp_path_factory.mktemp("queue")
    tb = Testbed(n_hosts=3, workdir=root / "tb", users=("ann", "bob", "eve"), groups={"lab": ("bob",)})
    try:
        # A short lease: a lost attempt runs again LEASE + 2 s after its runner last reported.
        config = tb.write_grid_config(root / "grid.toml", name="q", ssh={"connect_timeout": 3.0},
                                      node_fields={"cpu_count": 1, "memory_gb": 1}, backend={"venv": sys.prefix},
                                      queue={"lease_seconds": LEASE}, access={"users": ["ann"], "group": "lab"})
        config.write_text(config.read_text().replace("cpu_count = 1", "cpu_count = 2", 1))  # the head's
        config.write_text(config.read_text().replace('name = "host2"\n', 'name = "host2"\ngpus = [{ model = "A100", '
                                                     'memory_gb = 40 }]\n', 1))  # the GPU box two clusters share
        (root / "home").mkdir()
        env = {"HOME": str(root / "home"), "GRID_STATE_DIR": str(root / "state"), "XDG_STATE_HOME": str(root / "xdg"),
               "RAY_AUTH_MODE": "disabled", "GRID_CONFIG": str(config)}
        started = grid("cluster", "start", "--json", env=env, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"tb": tb, "env": env, "shared": tb.workdir, "root": root}
        grid("cluster", "stop", env=env, timeout=120)
    finally:
        tb.close()  # kills the hosts, and the Ray inside them, whatever the tests left


def cli(lab: dict[str, Any], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return grid(*args, env=lab["env"], timeout=timeout)


def member(lab: dict[str, Any], name: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The CLI of `name`, one of the lab's people on this machine: their own home and grid state
    (no record of the cluster: they did not start it), and their login name, as which they reach
    the head."""
    home = Path(lab["root"], f"home-{name}")
    home.mkdir(exist_ok=True)
    env = {**lab["env"], "HOME": str(home), "GRID_STATE_DIR": str(home / "state"), "XDG_STATE_HOME": str(home / "xdg"),
           "USER": name, "LOGNAME": name}
    return lambda *args, timeout=120: grid(*args, env=env, timeout=timeout)


def submit(lab: dict[str, Any], *args: str) -> str:
    """A detached job's id."""
    result = cli(lab, "run", "--detach", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def records(lab: dict[str, Any], *extra: str) -> dict[str, dict[str, Any]]:
    result = cli(lab, "jobs", "list", "--json", "--all", *extra)
    assert result.returncode == 0, result.stderr
    return {j["id"]: j for j in json.loads(result.stdout)}


def until(lab: dict[str, Any], ids: list[str], done: Callable[[dict[str, Any]], bool] = lambda j: j["state"] in FINAL,
          timeout: float = 90) -> dict[str, dict[str, Any]]:
    """The jobs' records once each is `done` (by default: ended)."""
    deadline = time.monotonic() + timeout
    while True:
        found = records(lab)
        if all(i in found and done(found[i]) for i in ids) or time.monotonic() > deadline:
            assert all(done(found[i]) for i in ids), {i: found.get(i) for i in ids}
            return found
        time.sleep(0.3)


def note(lab: dict[str, Any], tag: str, seconds: float = 0) -> list[str]:
    """A job that writes `tag` into the shared log when it starts, then sleeps."""
    return ["sh", "-c", f"echo {tag} >> {lab['shared']}/started; sleep {seconds}"]


def started_order(lab: dict[str, Any]) -> list[str]:
    path = Path(lab["shared"], "started")
    order = path.read_text().split() if path.exists() else []
    path.unlink(missing_ok=True)
    return order


def most_at_once(jobs: list[dict[str, Any]]) -> int:
    """The most of these jobs that ran at one moment, from their records."""
    edges = sorted([(j["started"], 1) for j in jobs] + [(j["ended"], -1) for j in jobs])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def fill(lab: dict[str, Any], seconds: float) -> list[str]:
    """Every CPU of the cluster busy for `seconds` (2 on the head, 1 on each worker)."""
    ids = [submit(lab, "--node", node, "--", "sleep", str(seconds)) for node in ("host1", "host1", "host2", "host3")]
    until(lab, ids, lambda j: j["state"] == "running" and j["started"] is not None, timeout=60)
    return ids


def test_more_jobs_than_cpus_are_all_accepted_and_all_run(lab: dict[str, Any]) -> None:
    runs = [cli(lab, "run", "--detach", "--", "sh", "-c", "echo job $GRID_JOB_ID; sleep 2") for _ in range(7)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    queued = [r for r in runs if "is queued, position" in r.stderr]
    assert len(queued) >= 3, [r.stderr for r in runs]  # 4 CPUs, 7 jobs
    assert "(resources): no node has 1 CPU free now" in queued[0].stderr
    ids = [r.stdout.strip() for r in runs]
    found = until(lab, ids)
    assert all(found[i]["state"] == "succeeded" for i in ids)
    assert {found[i]["user"] for i in ids} == {"root"}  # as the head's kernel saw the SSH login
    assert most_at_once([found[i] for i in ids]) <= 4
    assert cli(lab, "jobs", "logs", ids[-1]).stdout == f"job {ids[-1]}\n"


def test_a_detached_submission_takes_the_shortcut_until_a_file_it_was_made_from_changes(lab: dict[str, Any]) -> None:
    """After a detached submission by the usual path, the next queues by the kept shortcut
    (grid_core/shortcut.py), loading neither the config's classes nor pluggy; `jobs list`, `boost
    list`, `offload auto --status`, `memory ls` and `cluster status` read by it too. An edited config, or a keeper
    gone, sends a submission the usual way again; the job then has the config of now."""

    def profiled(*args: str) -> tuple[str, bool]:  # the command's output; whether it took the shortcut
        result = grid(*args, env={**lab["env"], "PYTHONPROFILEIMPORTTIME": "1"})
        assert result.returncode == 0, result.stderr
        return result.stdout, "grid_core.config.models" not in result.stderr and "pluggy" not in result.stderr

    def submitted(*argv: str) -> tuple[str, bool]:  # the job's id; whether it took the shortcut
        out, took = profiled("run", "--detach", "--", *argv)
        return out.strip(), took

    colour = ("sh", "-c", "echo $COLOUR")
    submit(lab, "--", "true")  # by either path: it keeps a shortcut
    first, quick = submitted(*colour)
    assert quick
    config = Path(lab["env"]["GRID_CONFIG"])
    text = config.read_text()
    try:
        config.write_text(text + '\n[execution]\nenvironment = { COLOUR = "blue" }\n')
        edited, quick = submitted(*colour)
        assert not quick
        again, quick = submitted(*colour)
        assert quick
    finally:
        config.write_text(text)
    kept = json.loads(next(Path(lab["env"]["GRID_STATE_DIR"], "shortcuts").glob("*.json")).read_text())
    with contextlib.closing(socket.socket(socket.AF_UNIX)) as keeper:  # asked to leave, as `cluster stop` does
        keeper.connect(kept["shortcut"]["route"]["socket"])
        keeper.sendall(b'{"op": "stop"}\n')
        keeper.recv(1024)
    no_keeper, quick = submitted(*colour)
    assert not quick
    found = until(lab, [first, edited, again, no_keeper])
    assert all(found[j]["state"] == "succeeded" for j in (first, edited, again, no_keeper))
    listed, took = profiled("jobs", "list", "--json")  # the status commands that ask the service alone take it too
    assert took and {first, again} <= {j["id"] for j in json.loads(listed)}
    table, took = profiled("jobs", "list")
    assert took and first in table
    for command in (("boost", "list", "--json"), ("offload", "auto", "--status", "--json"), ("memory", "ls", "--json")):
        answer, took = profiled(*command)
        assert took and isinstance(json.loads(answer), list | dict), command
    assert [cli(lab, "jobs", "logs", j).stdout for j in (first, edited, again, no_keeper)] == \
        ["\n", "blue\n", "blue\n", "\n"]
    # `cluster status` too, once the service has read every node lately (being asked, it reads
    # them): the service makes it from this machine's config, as the usual path does.
    usual = json.loads(cli(lab, "-v", "cluster", "status", "--json").stdout)  # -v: always the usual path
    deadline = time.monotonic() + 30
    while not (by_shortcut := profiled("cluster", "status", "--json"))[1] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert by_shortcut[1], "cluster status never took the shortcut"
    assert steady(json.loads(by_shortcut[0])) == steady(usual)
    table, took = profiled("cluster", "status")
    assert took and all(f" {host} " in table for host in ("host1", "host2", "host3")), table
    said, took = profiled("offload", "auto", "--status")  # its plugin line from the set kept with the shortcut
    assert took and said.startswith("automatic offload ") and "plugins:" not in said, said


def steady(status: dict[str, Any]) -> dict[str, Any]:
    """A ClusterStatus less what changes from one reading to the next."""
    changing = {"cpu_percent", "memory_percent", "swap_percent", "load1", "gpu_percent", "metrics_age",
                "metrics_from", "metrics_source", "resources"}
    return {**status, "nodes": [{k: v for k, v in node.items() if k not in changing} for node in status["nodes"]]}


def test_a_node_s_spare_runner_takes_its_next_job_which_holds_its_cpu_in_ray(lab: dict[str, Any]) -> None:
    """Once a job without GPUs has started on a node, a spare runner waits there (jobs.py) and the
    next job starts in it, without Ray starting a worker process. Ray counts that job's CPU as
    used while it runs (the spare's placement group), and frees it when the job is stopped. The
    spare is then kept for the node's next job, which it runs as its own."""

    def host3_cpus_used() -> float:
        status = json.loads(cli(lab, "cluster", "status", "--json").stdout)
        node = next(n for n in status["nodes"] if n["name"] == "host3")
        return float(node["resources"]["CPU"]["used"])

    def wait_for(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not check() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert check()

    runner, deadline = "", time.monotonic() + 90
    while not runner.startswith("grid-spare-host3-") and time.monotonic() < deadline:  # the spare is up
        job = submit(lab, "--node", "host3", "--", "sh", "-c", "echo in $GRID_JOB_ID; sleep 60")
        running = until(lab, [job], lambda j: j["state"] == "running" and j["started"] is not None)[job]
        runner = running["attempts"][-1]["runner"]
        if not runner.startswith("grid-spare-"):
            assert runner == f"grid-job-{job}-1"
            assert cli(lab, "jobs", "stop", job).returncode == 0
    assert runner.startswith("grid-spare-host3-"), runner
    wait_for(lambda: host3_cpus_used() == 1.0)
    stopped = cli(lab, "jobs", "stop", job)
    assert stopped.returncode == 0 and f"job {job}: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert cli(lab, "jobs", "logs", job).stdout == f"in {job}\n"
    wait_for(lambda: host3_cpus_used() == 0.0)
    again = submit(lab, "--node", "host3", "--", "sh", "-c", "echo in $GRID_JOB_ID")
    ended = until(lab, [again])[again]
    assert (ended["state"], ended["attempts"][-1]["runner"]) == ("succeeded", runner), ended
    assert cli(lab, "jobs", "logs", again).stdout == f"in {again}\n"
    wait_for(lambda: host3_cpus_used() == 0.0)


STRAY = """import sys, ray
from ray.util.placement_group import placement_group
from grid_plugin_ray_backend.layout import node_resource
ray.init(log_to_driver=False)
group = placement_group([{"CPU": 1, node_resource("host3"): 0.001}], name=sys.argv[1], lifetime="detached")
ray.get(group.ready(), timeout=30)
print("held", sys.argv[1])
"""


def test_a_reservation_left_by_a_runner_of_an_ended_attempt_is_freed(lab: dict[str, Any]) -> None:
    """A spare killed while it made its job's placement group can leave the group behind, holding
    the job's CPUs for good (a full run lost a CPU of host1 so). The service frees such a group:
    here one of an ended attempt's name, left on host3 by a job's own Ray driver."""
    ended = submit(lab, "--node", "host3", "--", "true")
    until(lab, [ended])
    name = f"grid-job-{ended}-1"
    made = cli(lab, "run", "--node", "host1", "--", "python", "-c", STRAY, name)
    assert made.returncode == 0 and made.stdout == f"held {name}\n", made.stdout + made.stderr
    deadline = time.monotonic() + 30
    while cpus_free(lab)["host3"] != (1.0, 1.0) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cpus_free(lab)["host3"] == (1.0, 1.0)


def test_the_queue_runs_by_priority_and_a_big_job_is_not_starved(lab: dict[str, Any]) -> None:
    started_order(lab)
    blockers = [submit(lab, "--node", "host1", "--", "sleep", "5"), submit(lab, "--node", "host1", "--", "sleep", "9"),
                submit(lab, "--node", "host2", "--", "sleep", "7"), submit(lab, "--node", "host3", "--", "sleep", "7")]
    until(lab, blockers, lambda j: j["started"] is not None, timeout=60)
    big = submit(lab, "--cpus", "2", "--", *note(lab, "big", 1))  # only the head could ever hold it
    low = submit(lab, "--priority", "low", "--", *note(lab, "low"))
    small = [submit(lab, "--", *note(lab, f"small{i}")) for i in range(3)]
    high = submit(lab, "--priority", "high", "--", *note(lab, "high"))
    waiting = records(lab)
    assert (waiting[big]["waiting"], waiting[big]["position"]) == ("resources", 2)  # behind `high`
    assert waiting[high]["position"] == 1 and waiting[low]["position"] == 6
    found = until(lab, [*blockers, big, low, high, *small])
    started_order(lab)
    # The order the queue started them in (their commands may begin in another, a moment apart):
    # priority, then submission; `low` may pass `big` only on a worker, whose CPU `big` cannot use.
    tags = {big: "big", low: "low", high: "high", **{job: f"small{i}" for i, job in enumerate(small)}}
    order = [tags[j] for j in sorted(tags, key=lambda j: found[j]["attempts"][0]["dispatched"])]
    assert order[0] == "high" and order.index("low") > max(order.index(f"small{i}") for i in range(3)), order
    # The head's first CPU freed at 5 s; the small jobs behind the big one must not have taken it.
    assert all(found[j]["node"] != "host1" or found[j]["started"] >= found[big]["started"] for j in small), found
    assert found[big]["node"] == "host1" and found[big]["state"] == "succeeded"


def test_an_array_never_runs_more_than_its_cap_and_stops_as_one(lab: dict[str, Any]) -> None:
    started_order(lab)
    run = cli(lab, "run", "--array", "0-5%2", "--", "sh", "-c",
              f"echo $GRID_ARRAY_ID.$GRID_ARRAY_INDEX >> {lab['shared']}/started; sleep 1")
    assert run.returncode == 0, run.stderr
    array = run.stdout.strip()
    assert "6 jobs queued" in run.stderr
    members = [f"{array}.{i}" for i in range(6)]
    found = until(lab, members)
    assert all(found[m]["state"] == "succeeded" for m in members)
    assert most_at_once([found[m] for m in members]) <= 2
    assert sorted(started_order(lab)) == members
    table = cli(lab, "jobs", "list")
    assert array in table.stdout and "array of 6" in table.stdout and f"{array}.3" not in table.stdout
    assert f"{array}.3" in cli(lab, "jobs", "list", "--expand").stdout

    stopped = submit(lab, "--array", "0-9%1", "--", "sleep", "60")
    until(lab, [f"{stopped}.0"], lambda j: j["state"] == "running")
    result = cli(lab, "jobs", "stop", stopped)
    assert result.returncode == 0 and result.stdout.count(": stopped") == 10, result.stdout
    assert {j["state"] for i, j in records(lab).items() if i.startswith(stopped)} == {"stopped"}


def test_after_starts_on_success_and_cancels_on_failure(lab: dict[str, Any]) -> None:
    first = submit(lab, "--", "sh", "-c", "sleep 1")
    then = submit(lab, "--after", first, "--", "true")
    assert records(lab)[then]["waiting"] == "dependency"
    failing = submit(lab, "--", "sh", "-c", "sleep 1; exit 3")
    never = submit(lab, "--after", f"{first},{failing}", "--", "true")
    found = until(lab, [first, then, failing, never])
    assert found[then]["state"] == "succeeded" and found[then]["started"] >= found[first]["ended"]
    assert found[never]["state"] == "stopped" and found[never]["started"] is None
    assert found[never]["reason"] == f"dependency: job {failing} failed"
    unknown = cli(lab, "run", "--detach", "--after", "0badc0de", "--", "true")
    assert unknown.returncode == 1 and "error: --after 0badc0de: no such job" in unknown.stderr


def test_time_stops_a_job_that_runs_past_it(lab: dict[str, Any]) -> None:
    job = submit(lab, "--time", "1s", "--", "sleep", "60")
    found = until(lab, [job], timeout=60)[job]
    assert (found["state"], found["exit_status"]) == ("timeout", 124)
    assert found["ended"] - found["started"] < 10
    assert "timed out after 1 s" in cli(lab, "jobs", "logs", job).stderr


def test_hold_and_release(lab: dict[str, Any]) -> None:
    held = submit(lab, "--hold", "--", "true")
    time.sleep(1.5)
    assert records(lab)[held]["state"] == "queued" and records(lab)[held]["waiting"] == "held"
    blockers = fill(lab, 3)
    later = submit(lab, "--", "true")
    assert cli(lab, "jobs", "hold", later).returncode == 0
    assert "released 1 waiting job" in cli(lab, "jobs", "release", held).stdout
    until(lab, [held, *blockers])
    assert records(lab)[later]["state"] == "queued"  # still held
    cli(lab, "jobs", "release", later)
    assert until(lab, [later])[later]["state"] == "succeeded"
    refused = cli(lab, "jobs", "hold", later)
    assert refused.returncode == 1 and "only a waiting job can be held" in refused.stderr


def test_ctrl_c_while_it_waits_takes_it_out_of_the_queue(lab: dict[str, Any]) -> None:
    blockers = fill(lab, 4)
    proc = subprocess.Popen([sys.executable, "-m", "grid_core", "run", "--", "true"], env={**os.environ, **lab["env"]},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=takes_ctrl_c)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(j["state"] == "queued" for j in records(lab).values()):
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "is queued, position" in err and ": stopped" in err, err
    job = [j for j in records(lab).values() if j["argv"] == ["true"]][-1]
    assert job["state"] == "stopped" and job["started"] is None
    until(lab, blockers)


def test_the_head_s_owner_busy_keeps_the_queue_off_the_head(lab: dict[str, Any]) -> None:
    assert cli(lab, "offload", "hold", "host1", "--reason", "its owner is busy").returncode == 0
    try:
        ids = [submit(lab, "--", "sleep", "1") for _ in range(4)]
        found = until(lab, ids)
        assert {found[i]["node"] for i in ids} <= {"host2", "host3"}
    finally:
        assert cli(lab, "offload", "release", "host1").returncode == 0
    later = [submit(lab, "--", "sleep", "1") for _ in range(4)]
    assert "host1" in {j["node"] for j in until(lab, later).values() if j["id"] in later}


@contextlib.contextmanager
def lease_of(lab: dict[str, Any], seconds: float) -> Iterator[None]:
    """New attempts are granted this lease meanwhile (the service adopts the config with the next
    command); each attempt keeps the lease it was granted."""
    config = Path(lab["env"]["GRID_CONFIG"])
    kept = config.read_text()
    assert f"lease_seconds = {LEASE}" in kept
    config.write_text(kept.replace(f"lease_seconds = {LEASE}", f"lease_seconds = {seconds}"))
    try:
        yield
    finally:
        config.write_text(kept)


def test_a_killed_service_comes_back_with_every_queued_job(lab: dict[str, Any]) -> None:
    with lease_of(lab, 30.0):  # longer than a restart of the service takes on a busy machine
        blockers = fill(lab, 120)
        queued = [submit(lab, "--", "true") for _ in range(20)]
        killed = lab["tb"].host_exec("host1", ["pkill", "-9", "-f", "ray::GridService"])
        assert killed.returncode == 0, killed.stderr
        time.sleep(1)
        after = records(lab)  # answered by the service Ray started again, from the store
        assert all(after[q]["state"] == "queued" for q in queued), {q: after[q]["state"] for q in queued}
        assert all(after[b]["state"] == "running" for b in blockers)  # the runners lived on
        queued.append(submit(lab, "--", "true"))  # by the shortcut kept before: the new service listens there too
        for blocker in blockers:
            assert cli(lab, "jobs", "stop", blocker).returncode == 0  # reaches the runner through the new service
        found = until(lab, queued, timeout=120)
        assert all(found[q]["state"] == "succeeded" for q in queued)

    def runners() -> dict[str, int]:  # on each host: spares, and runners of jobs that have not yet exited
        return {h: int(lab["tb"].host_exec(h, ["pgrep", "-fc", "ray::JobRunner"]).stdout or 0)
                for h in ("host1", "host2", "host3")}

    cpus = {"host1": 2, "host2": 1, "host3": 1}  # a node keeps at most a spare a CPU
    deadline = time.monotonic() + 30
    while any(n > cpus[h] for h, n in runners().items()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(n <= cpus[h] for h, n in runners().items()), runners()  # the new service ended the old one's idle spares


def test_cluster_stop_keeps_the_records_and_start_runs_the_queued(lab: dict[str, Any]) -> None:
    done = submit(lab, "--", "sh", "-c", "echo said before the stop")
    until(lab, [done])
    blockers = fill(lab, 60)
    queued = [submit(lab, "--", "true") for _ in range(2)]
    stop = cli(lab, "cluster", "stop", timeout=180)
    assert stop.returncode == 0, stop.stderr
    assert "2 queued jobs stay queued; the next grid cluster start resumes them" in stop.stderr
    start = cli(lab, "cluster", "start", timeout=300)
    assert start.returncode == 0, start.stdout + start.stderr
    assert cli(lab, "jobs", "logs", done).stdout == "said before the stop\n"
    found = until(lab, queued, timeout=120)
    assert all(found[b]["state"] == "stopped" and found[b]["reason"] == "stopped by grid cluster stop"
               for b in blockers)
    assert all(found[q]["state"] == "succeeded" for q in queued)


# ---------------------------------------------------------------------- what the queue survives
# A lost attempt runs again once its lease (LEASE here) has run out: Slurm's test3.8, HTCondor's
# schedd restart and Ray's chaos tests, through the CLI. Jobs write into files every host sees.


def kill_runners(lab: dict[str, Any]) -> None:
    """Every job runner on every host dies (kill -9), as Ray's worker processes may."""
    for host in ("host1", "host2", "host3"):
        lab["tb"].host_exec(host, ["pkill", "-9", "-f", "ray::JobRunner"])


def attempts(job: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [(a["number"], a["node"], a["state"]) for a in job["attempts"]]


def cpus_free(lab: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Each live node's CPUs (free, in all), as Ray sees them."""
    status = cli(lab, "cluster", "status", "--json")
    assert status.returncode == 0, status.stderr
    return {n["name"]: (n["resources"]["CPU"]["available"], n["resources"]["CPU"]["total"])
            for n in json.loads(status.stdout)["nodes"] if n["alive"]}


def test_a_job_on_a_worker_that_powers_off_runs_again_elsewhere_exactly_once(lab: dict[str, Any]) -> None:
    log = Path(lab["shared"], "attempts-power")
    blockers = [submit(lab, "--node", n, "--", "sleep", "12") for n in ("host1", "host1", "host2")]
    until(lab, blockers, lambda j: j["started"] is not None, timeout=60)
    job = submit(lab, "--", "sh", "-c", f"echo start $GRID_ATTEMPT $(hostname) >> {log}; echo attempt $GRID_ATTEMPT; "
                                        f"sleep 4; echo done $GRID_ATTEMPT >> {log}")
    assert until(lab, [job], lambda j: j["started"] is not None, timeout=60)[job]["node"] == "host3"
    lab["tb"].power_off("host3")
    try:
        found = until(lab, [job], timeout=120)[job]
        assert found["state"] == "succeeded", found
        (first, host3, lost), (second, node, succeeded) = attempts(found)
        assert (first, host3, lost, second, succeeded) == (1, "host3", "lost", 2, "succeeded") and node != "host3"
        assert "its lease ran out" in found["attempts"][0]["reason"] or "runner" in found["attempts"][0]["reason"]
        assert log.read_text() == f"start 1 host3\nstart 2 {node}\ndone 2\n"  # exactly once to the end
        assert cli(lab, "jobs", "logs", job).stdout == "attempt 2\n"
        assert cli(lab, "jobs", "logs", job, "--attempt", "1").stdout == "attempt 1\n"
        no_such = cli(lab, "jobs", "logs", job, "--attempt", "3")
        assert no_such.returncode == 1 and "has no attempt 3: it has run 2 time(s)" in no_such.stderr
        deadline = time.monotonic() + 60  # until Ray has given host3 up: a reboot takes longer than that
        while "host3" in cpus_free(lab) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "host3" not in cpus_free(lab)
    finally:
        lab["tb"].power_on("host3")
    booted = time.monotonic()  # its sshd answers: the head starts it again, with no command typed

    def rejoined() -> bool:  # Ray lists it a moment before the service records that it started it
        events = json.loads(cli(lab, "offload", "auto", "--status", "--json").stdout)["events"]
        return any(e["kind"] == "rejoin" and e["node"] == "host3" for e in events)

    while not ("host3" in cpus_free(lab) and rejoined()) and time.monotonic() - booted < 60:
        time.sleep(0.5)
    assert "host3" in cpus_free(lab) and rejoined(), cli(lab, "cluster", "status").stdout
    assert cli(lab, "run", "--node", "host3", "--", "hostname").stdout == "host3\n"


def test_a_job_runs_again_at_most_its_retries_and_not_at_all_with_no_requeue(lab: dict[str, Any]) -> None:
    log = Path(lab["shared"], "attempts-retries")
    twice = submit(lab, "--retries", "2", "--", "sh", "-c", f"echo $GRID_ATTEMPT >> {log}; "
                                                             "[ $GRID_ATTEMPT = 3 ] || sleep 60")
    never = submit(lab, "--no-requeue", "--", "sleep", "60")
    until(lab, [twice, never], lambda j: j["started"] is not None)
    kill_runners(lab)
    until(lab, [twice], lambda j: len(j["attempts"]) == 2 and j["started"] is not None, timeout=90)
    kill_runners(lab)
    found = until(lab, [twice, never], timeout=90)
    assert found[twice]["state"] == "succeeded" and log.read_text() == "1\n2\n3\n"  # ran exactly 3 times
    assert [state for _, _, state in attempts(found[twice])] == ["lost", "lost", "succeeded"]
    assert found[never]["state"] == "lost" and len(found[never]["attempts"]) == 1
    assert found[never]["reason"].endswith("; not run again (--no-requeue)")
    conflict = cli(lab, "run", "--retries", "1", "--no-requeue", "--", "true")
    assert conflict.returncode == 2 and "--retries and --no-requeue contradict" in conflict.stderr


def test_the_head_powered_off_under_running_and_waiting_jobs_loses_none(lab: dict[str, Any]) -> None:
    log = Path(lab["shared"], "attempts-head")
    script = f"echo out $GRID_ATTEMPT; echo $GRID_JOB_ID $GRID_ATTEMPT >> {log}; [ $GRID_ATTEMPT -gt 1 ] || sleep 90"
    running = [submit(lab, "--node", n, "--", "sh", "-c", script) for n in ("host1", "host1", "host2", "host3")]
    until(lab, running, lambda j: j["started"] is not None, timeout=60)
    until_output = time.monotonic() + 30
    while time.monotonic() < until_output and any(cli(lab, "jobs", "logs", j).stdout != "out 1\n" for j in running):
        time.sleep(0.2)
    waiting = [submit(lab, "--", "true") for _ in range(3)]
    lab["tb"].power_off("host1")
    lab["tb"].power_on("host1")
    start = cli(lab, "cluster", "start", timeout=300)
    assert start.returncode == 0, start.stdout + start.stderr
    after = records(lab)
    for job in running:  # none shown running without a live runner: each waits for its old lease, or runs anew
        assert after[job]["state"] != "running" or len(after[job]["attempts"]) == 2, after[job]
        assert after[job]["attempts"][0]["state"] == "lost"
        assert cli(lab, "jobs", "logs", job, "--attempt", "1").stdout == "out 1\n"  # its output so far, kept
    assert all(after[w]["state"] in ("queued", "running", "succeeded") for w in waiting)
    found = until(lab, running + waiting, timeout=120)
    assert all(found[j]["state"] == "succeeded" for j in running + waiting), found
    assert sorted(log.read_text().split("\n")) == sorted(["", *(f"{j} {n}" for j in running for n in (1, 2))])


def test_a_worker_cut_off_past_the_lease_never_runs_a_job_twice_at_once(lab: dict[str, Any]) -> None:
    """The partition: the runner on the cut-off worker kills its command when its lease runs out,
    and the job runs again elsewhere only after that; a stream of jobs submitted meanwhile each
    end exactly once."""
    ticks, done = Path(lab["shared"], "ticks"), Path(lab["shared"], "done")
    blockers = [submit(lab, "--node", n, "--", "sleep", "6") for n in ("host1", "host1", "host2")]
    until(lab, blockers, lambda j: j["started"] is not None, timeout=60)
    job = submit(lab, "--", "sh", "-c", f"while :; do echo $GRID_ATTEMPT $(date +%s.%N) >> {ticks}; "
                                        "[ $GRID_ATTEMPT -gt 1 ] && exit 0; sleep 0.2; done")
    assert until(lab, [job], lambda j: j["started"] is not None, timeout=60)[job]["node"] == "host3"
    lab["tb"].link_down("host3")
    try:
        array = submit(lab, "--array", "0-99", "--", "sh", "-c", f"echo $GRID_JOB_ID >> {done}")
        stream = [f"{array}.{i}" for i in range(100)]
        time.sleep(LEASE + 2)  # cut off past the lease
    finally:
        lab["tb"].link_up("host3")
    found = until(lab, [job, *stream], timeout=180)
    assert attempts(found[job])[0][1:] == ("host3", "lost") and found[job]["state"] == "succeeded", found[job]
    seen = [line.split() for line in ticks.read_text().splitlines()]
    second = min(float(t) for a, t in seen if a == "2")
    assert all(float(t) < second for a, t in seen if a == "1")  # attempt 1 was dead before attempt 2 began
    assert all(found[j]["state"] == "succeeded" for j in stream)
    assert sorted(done.read_text().split()) == sorted(stream)  # each ran once, none twice
    assert cli(lab, "cluster", "start", timeout=300).returncode == 0  # host3 back, if Ray let it go
    deadline = time.monotonic() + 30
    while any(free != total for free, total in cpus_free(lab).values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert all(free == total for free, total in cpus_free(lab).values()), cpus_free(lab)


def test_start_and_doctor_say_which_worker_cannot_come_back_by_itself(lab: dict[str, Any]) -> None:
    """A key the CLI's machine has and the head has not (the hosts see only the test bed's folder
    of this machine's /tmp): the head could not start the workers again after a reboot."""
    config = Path(lab["env"]["GRID_CONFIG"])
    kept = config.read_text()
    key = Path(lab["root"], "keys", "id_ed25519")
    key.parent.mkdir(exist_ok=True)
    shutil.copy(lab["tb"].client_key, key)
    config.write_text(kept.replace(str(lab["tb"].client_key), str(key)))
    try:
        start = cli(lab, "cluster", "start", timeout=300)
        assert start.returncode == 0, start.stderr
        said = f"cannot come back by itself after a reboot: its ssh_key_path {key} is not on the head host1"
        assert " ".join(start.stderr.split()).count(said) == 2, start.stderr  # host2 and host3 (lines wrap)
        doctor = " ".join(cli(lab, "doctor").stderr.split())
        assert f"warning: node host3 {said}" in doctor, doctor
    finally:
        config.write_text(kept)
    assert "cannot come back by itself" not in cli(lab, "doctor").stderr  # the key the head has, again


# ---------------------------------------------------------------------- the lab's people


@contextlib.contextmanager
def configured(lab: dict[str, Any], **tables: Any) -> Iterator[None]:
    """The cluster's config with these tables replaced, brought to the service by the owner's next
    command (a member's copy never is), and as it was again afterwards."""
    import tomllib

    import tomli_w

    path = Path(lab["env"]["GRID_CONFIG"])
    before = path.read_text()
    path.write_text(tomli_w.dumps({**tomllib.loads(before), **tables}))
    try:
        assert cli(lab, "jobs", "list").returncode == 0
        yield
    finally:
        path.write_text(before)
        cli(lab, "jobs", "list")


def test_members_run_their_own_jobs_as_themselves_and_an_outsider_is_refused(lab: dict[str, Any]) -> None:
    ann, bob, eve = (member(lab, name) for name in ("ann", "bob", "eve"))
    started = ann("run", "--detach", "--node", "host2", "--",
                  "sh", "-c", "id -un; touch $HOME/made; stat -c %U $HOME/made; sleep 30")
    assert started.returncode == 0, started.stderr
    job = started.stdout.strip()
    assert until(lab, [job], lambda j: j["state"] == "running")[job]["user"] == "ann"  # as the head's kernel saw her
    deadline = time.monotonic() + 30
    while (logs := ann("jobs", "logs", job)).stdout != "ann\nann\n" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert logs.stdout == "ann\nann\n", logs.stderr  # root runs the cluster: the job ran as ann, its file is hers
    listed = bob("jobs", "list", "--json")
    assert listed.returncode == 0 and job in {j["id"] for j in json.loads(listed.stdout)}  # bob is in group lab
    for args, what in ((("jobs", "stop", job), "stop"), (("jobs", "logs", job), "read the output of"),
                       (("jobs", "hold", job), "hold or release")):
        refused = bob(*args)
        assert refused.returncode == 1 and f"bob may not {what} job {job}: it is ann's" in refused.stderr
    refused = bob("offload", "hold", "host3")
    assert refused.returncode == 1 and "only the cluster's owner and [access] admins may" in refused.stderr
    outsider = eve("jobs", "list")
    assert outsider.returncode == 1 and "eve may not use cluster 'q'" in outsider.stderr
    assert "[access] users" in outsider.stderr and "Traceback" not in outsider.stderr
    mine = ann("jobs", "list", "--mine", "--json")
    assert {j["user"] for j in json.loads(mine.stdout)} == {"ann"}
    assert {j["id"] for j in json.loads(cli(lab, "jobs", "list", "--user", "ann", "--json").stdout)} == \
        {j["id"] for j in json.loads(mine.stdout)}
    assert cli(lab, "jobs", "stop", job).returncode == 0  # the owner may stop anyone's
    assert until(lab, [job])[job]["state"] == "stopped"
    # The memory pool: each entry says whose it is; only they (or the owner, an admin) remove it.
    data = Path(lab["root"], "weights.bin")
    data.write_bytes(b"ann's weights")
    assert ann("memory", "put", "ann-weights", str(data)).returncode == 0
    entry = next(e for e in json.loads(bob("memory", "ls", "--json").stdout) if e["key"] == "ann-weights")
    assert entry["owner"] == "ann"
    for args, what in ((("memory", "rm", "ann-weights"), "remove"),
                       (("memory", "put", "ann-weights", str(data), "--replace"), "replace")):
        refused = bob(*args)
        assert refused.returncode == 1 and f"bob may not {what} entry 'ann-weights': it is ann's" in refused.stderr
    assert ann("memory", "rm", "ann-weights").returncode == 0
    # An admin does what the owner does, and the boost and its events say who asked.
    with configured(lab, access={"users": ["ann"], "group": "lab", "admins": ["ann"]}):
        made = ann("boost", "request", "host1", "cpu", "0.5", "--json")
        assert made.returncode == 0, made.stderr
        boost = json.loads(made.stdout)
        assert boost["user"] == "ann"
        assert ann("boost", "release", boost["id"]).returncode == 0
        events = json.loads(bob("offload", "auto", "--status", "--json").stdout)["events"]
        assert [(e["kind"], e["user"]) for e in events[-2:]] == [("boost", "ann"), ("boost-released", "ann")]


def test_fair_share_runs_the_second_user_first_and_a_user_limit_holds_back(lab: dict[str, Any]) -> None:
    ann, bob = member(lab, "ann"), member(lab, "bob")
    where = Path(lab["shared"], "people")  # their jobs run as them: a place each may write in
    where.mkdir(mode=0o1777)
    where.chmod(0o1777)

    def order() -> list[str]:  # each job writes when it started into a file of its own
        return sorted((p.name for p in where.iterdir()), key=lambda name: float((where / name).read_text() or 0))

    deadline = time.monotonic() + 30  # the earlier tests' jobs have left host1
    while cpus_free(lab)["host1"] != (2.0, 2.0) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cpus_free(lab)["host1"] == (2.0, 2.0)
    with configured(lab, scheduler={"name": "fair-share"}):
        sweeps = [person("run", "--detach", "--array", "0-9", "--node", "host1", "--", "sh", "-c",
                         f"date +%s.%N > {where}/{name}$GRID_ARRAY_INDEX; sleep {seconds}")
                  for person, name, seconds in ((ann, "ann", 4), (bob, "bob", 0.5))]
        assert all(s.returncode == 0 for s in sweeps), [s.stderr for s in sweeps]
        deadline = time.monotonic() + 60
        while not (where / "bob0").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.2)  # its time is written
        ran = order()
        # On host1's 2 CPUs ann's first two ran (their commands may begin in either order, a moment
        # apart); when one ended, bob (who had used nothing) came next.
        assert sorted(ran[:2]) == ["ann0", "ann1"] and "bob0" in ran and "ann2" not in ran[:ran.index("bob0")], ran
        usage = {u["user"]: u for u in json.loads(bob("jobs", "usage", "--json").stdout)}
        assert usage["ann"]["cpu_seconds"] > 0 and usage["ann"]["share"] > usage["bob"]["share"]
        for sweep in sweeps:
            assert cli(lab, "jobs", "stop", sweep.stdout.strip()).returncode == 0
    with configured(lab, access={"users": ["ann"], "group": "lab", "limits": {"cpus": 1}}):
        ids = [ann("run", "--detach", "--", "sleep", "20").stdout.strip() for _ in range(2)]
        found = until(lab, ids, lambda j: j["state"] == "running" or j.get("waiting") == "limit")
        assert sorted(found[i]["state"] for i in ids) == ["queued", "running"]
        waits = next(found[i] for i in ids if found[i]["state"] == "queued")
        assert "ann's jobs hold 1 of at most 1 CPUs at once ([access.limits] cpus)" in waits["reason"]
        for i in ids:
            cli(lab, "jobs", "stop", i)


def test_two_clusters_over_one_gpu_box_never_run_two_jobs_on_its_gpu(lab: dict[str, Any]) -> None:
    """Two people's clusters over host2, whose one GPU both declare: q (the module's) and q2, a
    cluster of host2 alone. A GPU job of each: the second waits until the first ends, and says why."""
    import tomllib

    import tomli_w

    tb, root = lab["tb"], Path(lab["root"])
    doc = tomllib.loads(tb.write_grid_config(root / "q2.toml", nodes=["host2"], name="q2", backend={
        "venv": sys.prefix, "port": 6479}, node_fields={"cpu_count": 1, "memory_gb": 1}).read_text())
    doc["nodes"][0]["gpus"] = [{"model": "A100", "memory_gb": 40}]
    (root / "q2.toml").write_text(tomli_w.dumps(doc))
    (root / "home-q2").mkdir(exist_ok=True)
    other = {**lab["env"], "HOME": str(root / "home-q2"), "GRID_STATE_DIR": str(root / "state-q2"),
             "XDG_STATE_HOME": str(root / "xdg-q2"), "GRID_CONFIG": str(root / "q2.toml")}
    assert grid("cluster", "start", env=other, timeout=300).returncode == 0
    try:
        first = grid("run", "--detach", "--gpus", "1", "--", "sh", "-c", "echo gpu $CUDA_VISIBLE_DEVICES; sleep 6",
                     env=other)
        assert first.returncode == 0, first.stderr
        first_id = first.stdout.strip()
        deadline = time.monotonic() + 60  # its runner has claimed the GPU once its command runs
        while time.monotonic() < deadline and not next(j for j in json.loads(grid(
                "jobs", "list", "--json", env=other).stdout) if j["id"] == first_id)["started"]:
            time.sleep(0.3)
        second = submit(lab, "--gpus", "1", "--", "sh", "-c", "echo gpu $CUDA_VISIBLE_DEVICES")
        # Bounced back in line (its attempt found the GPU claimed), with the next plan's word on it:
        waited = until(lab, [second], lambda j: j["state"] == "queued" and "is in use by" in (j["reason"] or "")
                       and j["waiting"] is not None, timeout=30)[second]
        claim = f"GPU 0 of host2 is in use by root's job {first_id} of cluster q2 (run by root)"
        assert claim in waited["reason"] and waited["waiting"] == "resources"
        def claims() -> dict[str, list[str]]:  # host2's agent reports what other clusters hold there
            return {n["name"]: n["gpu_claims"] for n in json.loads(cli(lab, "cluster", "status", "--json").stdout)[
                "nodes"]}

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not claims()["host2"]:
            time.sleep(0.5)
        assert claims() == {"host1": [], "host2": [claim], "host3": []}
        done = until(lab, [second], timeout=60)[second]
        theirs = json.loads(grid("jobs", "list", "--json", env=other).stdout)
        ended = next(j["ended"] for j in theirs if j["id"] == first_id)
        assert done["state"] == "succeeded" and done["started"] >= ended  # never both at once
        assert cli(lab, "jobs", "logs", second).stdout == "gpu 0\n"
    finally:
        grid("cluster", "stop", env=other, timeout=120)
