"""One plugin set on a whole cluster: three real test hosts, real Ray, driven through the CLI.

The CLI runs from an environment of its own (the test environment's packages, linked, without the
scripted metrics source), so that a plugin can be on the workers only. One testbed, one install
and one start serve the module; the tests run in file order and each leaves the cluster started,
with the threshold policy, for the next: a metrics source on the workers only; `plugins install`
of the example policy and `plugins remove`; of the example scheduler, which then orders and places
the queue; a node with an older plugin refused at start; a policy
that fails at import; a policy that raises in decide.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, grid, linked_venv
from tests.test_ray_cluster import FAST_DEATH, VENV, Env, by_name, fill_wheelhouse
from tests.testbed import Testbed, require_testbed

pytestmark = [pytest.mark.realhost, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

HOSTS = ("host1", "host2", "host3")
LOADAVG = "grid-policy-loadavg"
SCHEDULER = "grid-scheduler-gpu-boxes-last"
SCRIPTED = "grid-test-scripted-metrics"
THRESHOLD = "grid-plugin-threshold-offload"
POOL = "grid-plugin-memory-pool"  # a service request: its actors may run on any node, so it counts on all

BROKEN_POLICY = "raise RuntimeError('the broken policy cannot start')\n"
FLAKY_POLICY = '''
from grid_core.hookspecs import hookimpl
from grid_core.types import GridOffloadPolicy, OffloadDecision


class Flaky:
    calls = 0  # in the service's process: the first decision holds, every later one raises

    def __init__(self, settings):
        pass

    def decide(self, nodes, state):
        Flaky.calls += 1
        if Flaky.calls == 1:
            return OffloadDecision(True, "flaky holds once", ("cpu",))
        raise ZeroDivisionError("flaky policy bug")


@hookimpl
def grid_offload_policies():
    yield GridOffloadPolicy(name="flaky", summary="holds once, then raises", factory=Flaky)
'''


def policy_package(root: Path, dist: str, module: str, ep: str, source: str, version: str = "1.0") -> Path:
    pkg = root / dist
    (pkg / module).mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=70.1"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{dist}"\nversion = "{version}"\ndependencies = ["grid-core>=0.1"]\n'
        f'[project.entry-points.grid]\n{ep} = "{module}"\n')
    (pkg / module / "__init__.py").write_text(source)
    return pkg


def build_wheels(root: Path) -> Path:
    """Once per module: the wheels the tests install on hosts by hand (a host sees the testbed's
    workdir): the scripted source, an older memory pool, a broken and a flaky policy."""
    sources = root / "src"
    old = sources / "memory-pool-old"
    shutil.copytree(REPO / "plugins" / "memory-pool", old, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    pyproject = old / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.0.9"', 1))
    trees = [REPO / "tests" / "plugins" / "scripted-metrics", old,
             policy_package(sources, "grid-policy-broken", "grid_policy_broken", "broken", BROKEN_POLICY),
             policy_package(sources, "grid-policy-flaky", "grid_policy_flaky", "flaky", FLAKY_POLICY)]
    wheels = root / "wheels"
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             "--wheel-dir", str(wheels), *map(str, trees)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return wheels


class CliEnv(Env):
    def __init__(self, root: Path, config: Path, python: Path) -> None:
        super().__init__(root, config)
        self.python = str(python)

    def grid(self, *args: str, config: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**self.vars, **({"GRID_CONFIG": str(config)} if config else {})}
        return grid(*args, env=env, timeout=timeout, python=self.python)


class Bed:
    def __init__(self, tb: Testbed, env: CliEnv, wheels: Path, started: str) -> None:
        self.tb, self.env, self.wheels, self.started = tb, env, wheels, started

    def pip_on(self, host: str, *args: str) -> None:
        """pip in a host's venv, by hand (as a user on that machine would)."""
        done = self.tb.host_exec(host, [f"{VENV}/bin/python", "-m", "pip", "--disable-pip-version-check", "-q",
                                        *args])
        assert done.returncode == 0, done.stderr

    def wheel(self, dist: str) -> str:
        prefix = dist.replace("-", "_")
        return str(next(w for w in self.wheels.iterdir() if w.name.startswith(prefix + "-")))

    def matrix(self) -> dict[str, Any]:
        result = self.env.grid("plugins", "list", "--cluster", "--json")
        return {**json.loads(result.stdout), "returncode": result.returncode}

    def status(self) -> dict[str, Any]:
        return dict(self.env.json("offload", "auto", "--status"))

    def wait_status(self, until: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status = self.status()
        while not until(status):
            assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s: {json.dumps(status)[-2000:]}"
            time.sleep(1.0)
            status = self.status()
        return status


def rows(matrix: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["distribution"]: r for r in matrix["plugins"]}


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    require_testbed()
    wheelhouse = fill_wheelhouse()
    root = tmp_path_factory.mktemp("pluginset")
    tb = Testbed(n_hosts=3, workdir=root / "tb")
    try:
        wheels = build_wheels(tb.workdir)
        scripted = tb.workdir / "scripted.json"  # the workers' readings, which their agents read
        config = tb.write_grid_config(
            root / "grid.toml", name="plugins", ssh={"connect_timeout": 3.0}, metrics={"sources": ["scripted"]},
            offload={"interval_seconds": 1.0, "cooldown_seconds": 1.0},
            backend={"venv": VENV, "env": {**FAST_DEATH, "GRID_SCRIPTED_METRICS": str(scripted)}})
        env = CliEnv(root, config, linked_venv(root / "cli-venv", leave_out="scripted_metrics"))
        assert SCRIPTED not in env.grid("plugins", "list").stdout
        installed = env.json("cluster", "install", "--wheelhouse", str(wheelhouse))
        assert all(n["ok"] for n in installed["nodes"]), installed
        b = Bed(tb, env, wheels, "")
        for host in ("host2", "host3"):  # a metrics source on the workers only
            b.pip_on(host, "install", "--no-deps", b.wheel(SCRIPTED))
        started = env.grid("cluster", "start")
        assert started.returncode == 0, started.stdout + started.stderr
        b.started = started.stdout
        yield b
    finally:
        tb.close()


def test_a_metrics_source_on_the_workers_only_is_named_at_start_and_used_by_their_agents(bed: Bed) -> None:
    note = f"also has {SCRIPTED} 0.1.0, which this machine does not"
    assert bed.started.count(note) == 2, bed.started  # host2 and host3, each in its row
    matrix = bed.matrix()
    assert matrix["returncode"] == 0 and matrix["fix"] is None
    row = rows(matrix)[SCRIPTED]
    assert row["here"] is None and row["counts_on"] == "not installed here" and row["differs"] == []
    assert row["nodes"] == {"host1": None, "host2": "0.1.0", "host3": "0.1.0"}
    assert rows(matrix)[THRESHOLD]["counts_on"] == "the head"
    table = bed.env.grid("plugins", "list", "--cluster").stdout
    assert SCRIPTED in table and "the same on every node where it counts" in table
    # The agents read the workers with it: readings no machine would give.
    (bed.tb.workdir / "scripted.json").write_text(json.dumps({
        "host2": {"cpu_percent": 12.5, "memory_percent": 3.25},
        "host3": {"cpu_percent": 21.5, "memory_percent": 4.75}}))
    bed.env.json("offload", "auto", "--enable", "--threshold", "cpu=99", "--threshold", "memory=99")
    status = bed.wait_status(lambda s: [(n["name"], n["cpu_percent"]) for n in s["nodes"] if n["name"] != "host1"]
                             == [("host2", 12.5), ("host3", 21.5)], "scripted readings from the workers' agents")
    assert {n["name"]: n["memory_percent"] for n in status["nodes"]}["host3"] == 4.75


def test_plugins_install_puts_a_policy_on_every_node_and_remove_takes_it_away(bed: Bed) -> None:
    env = bed.env
    installed = env.json("plugins", "install", str(REPO / "examples" / "offload-policy"))
    assert {n["name"]: n["action"] for n in installed["nodes"]} == dict.fromkeys(HOSTS, "installed")
    row = rows(bed.matrix())[LOADAVG]
    assert (row["here"], row["counts_on"], row["nodes"]) == ("0.1.0", "the head", dict.fromkeys(HOSTS, "0.1.0"))
    # The running service started without it: both status commands say so, and how to restart.
    changed = f"{LOADAVG} absent -> 0.1.0"
    said = env.grid("offload", "auto", "--status").stdout
    assert changed in said and "grid cluster start --restart-service" in said, said
    drift = env.json("cluster", "status")["plugins_changed"]
    assert drift["changes"] == [{"distribution": LOADAVG, "started_with": None, "now": "0.1.0"}]
    assert drift["restart"] == ["service"]  # a policy runs in the service only
    env.json("offload", "auto", "--enable", "--policy", "loadavg")
    bed.wait_status(lambda s: "per core" in ((s["decision"] or {}).get("reason") or ""), "a decision by loadavg")
    said = env.grid("offload", "auto", "--status").stdout
    assert any(line.startswith("decision: ") and "per core" in line for line in said.splitlines()), said
    restarted = env.grid("cluster", "start", "--restart-service")
    assert restarted.returncode == 0, restarted.stderr
    after = env.grid("offload", "auto", "--status").stdout
    assert "plugins:" not in after and "policy loadavg" in after  # its settings outlived the restart
    assert env.json("cluster", "status")["plugins_changed"] is None

    env.json("offload", "auto", "--enable", "--policy", "threshold")
    removed = env.json("plugins", "remove", LOADAVG)
    assert {n["name"]: n["action"] for n in removed["nodes"]} == dict.fromkeys(HOSTS, "removed")
    assert LOADAVG not in rows(bed.matrix())
    for host in HOSTS:
        gone = bed.tb.host_exec(host, [f"{VENV}/bin/python", "-c", "import grid_policy_loadavg"])
        assert gone.returncode != 0 and "No module named 'grid_policy_loadavg'" in gone.stderr
    assert f"{LOADAVG} 0.1.0 -> removed" in env.grid("offload", "auto", "--status").stdout
    assert env.grid("cluster", "start", "--restart-service").returncode == 0


def test_plugins_install_of_a_scheduler_orders_and_places_the_queue(bed: Bed) -> None:
    """examples/scheduler: CPU jobs kept off the GPU box (host2, tagged) while others have room, and
    the smaller of two waiting jobs first; the service picks it up without a restart."""
    import tomllib

    import tomli_w

    env = bed.env
    installed = env.json("plugins", "install", str(REPO / "examples" / "scheduler"))
    assert {n["name"]: n["action"] for n in installed["nodes"]} == dict.fromkeys(HOSTS, "installed")
    assert rows(bed.matrix())[SCHEDULER]["counts_on"] == "the head"
    source = Path(env.vars["GRID_CONFIG"])
    doc = tomllib.loads(source.read_text())
    doc["scheduler"] = {"name": "gpu-boxes-last"}
    doc["nodes"][1]["tags"] = ["gpu"]
    config = source.with_name("scheduler.toml")
    config.write_text(tomli_w.dumps(doc))
    env.json("offload", "auto", "--disable")  # the machine's own load must not hold the head meanwhile

    def submit(*args: str) -> str:
        result = env.grid("run", "--detach", *args, config=config)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def listed() -> dict[str, dict[str, Any]]:
        return {j["id"]: j for j in json.loads(env.grid("jobs", "list", "--json", config=config).stdout)}

    cpus = {n["name"]: n["resources"]["CPU"]["total"] for n in env.json("cluster", "status")["nodes"]}
    plain = [submit("--", "sleep", "4") for _ in range(int(cpus["host1"] + cpus["host3"]))]
    deadline = time.monotonic() + 60
    while any(listed()[j]["state"] == "queued" for j in plain) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert {listed()[j]["node"] for j in plain} == {"host1", "host3"}
    spill = [submit("--", "sleep", "4") for _ in range(int(cpus["host2"]))]  # now only the GPU box has room
    while any(listed()[j]["state"] == "queued" for j in spill) and time.monotonic() < deadline:
        time.sleep(0.3)  # a detached job starts just after its submission is answered
    big, small = submit("--cpus", "2", "--", "true"), submit("--", "true")  # all CPUs busy: both wait
    now = listed()
    assert {now[j]["node"] for j in spill} == {"host2"}
    assert (now[small]["position"], now[big]["position"]) == (1, 2), (now[small], now[big])
    deadline = time.monotonic() + 90
    while any(listed()[j]["state"] in ("queued", "running") for j in (*plain, *spill, big, small)):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert env.json("plugins", "remove", SCHEDULER)["nodes"]
    env.json("offload", "auto", "--enable", "--policy", "threshold")


def test_a_node_with_an_older_plugin_is_refused_at_start_with_both_versions(bed: Bed) -> None:
    env = bed.env
    bed.pip_on("host3", "install", "--no-deps", "--force-reinstall", bed.wheel(POOL))  # 0.0.9, by hand
    result = env.grid("cluster", "start", "--json")
    assert result.returncode == 1
    nodes = by_name(json.loads(result.stdout))
    assert nodes["host1"]["ok"] and nodes["host2"]["ok"] and not nodes["host3"]["ok"]
    assert nodes["host3"]["reason"] == (f"{POOL} 0.0.9 on host3, 0.1.0 here (it counts on every node): "
                                        "run `grid cluster install --node host3`")
    matrix = bed.matrix()
    assert matrix["returncode"] == 1 and matrix["fix"] == "grid cluster install --node host3"
    assert rows(matrix)[POOL]["nodes"]["host3"] == "0.0.9" and rows(matrix)[POOL]["differs"] == ["host3"]
    fixed = env.json("cluster", "install", "--node", "host3")  # the fix the refusal names
    assert by_name(fixed)["host3"]["action"] == "installed"
    assert env.grid("cluster", "start").returncode == 0


def test_a_policy_that_fails_at_import_is_one_clear_error_and_the_last_good_policy_stays(bed: Bed) -> None:
    bed.pip_on("host1", "install", "--no-deps", bed.wheel("grid-policy-broken"))
    try:
        refused = bed.env.grid("offload", "auto", "--enable", "--policy", "broken")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert "no offload policy named 'broken'" in line
        assert "broken (failed: load error: RuntimeError: the broken policy cannot start)" in line
        status = bed.status()
        assert status["policy"] == "threshold" and status["enabled"]
    finally:
        bed.pip_on("host1", "uninstall", "--yes", "grid-policy-broken")


def test_a_policy_raising_in_decide_is_an_error_event_and_the_head_is_released(bed: Bed) -> None:
    bed.pip_on("host1", "install", "--no-deps", bed.wheel("grid-policy-flaky"))
    try:
        bed.env.json("offload", "auto", "--enable", "--policy", "flaky")
        status = bed.wait_status(lambda s: any(e["kind"] == "error" for e in s["events"]), "an error event")
        error = next(e for e in status["events"] if e["kind"] == "error")
        assert error["node"] == "host1"
        assert error["reason"] == "policy 'flaky' failed: ZeroDivisionError: flaky policy bug"
        kinds = [e["kind"] for e in status["events"] if e["node"] == "host1"]
        assert kinds[-3:] == ["hold", "error", "release"], kinds
        assert status["held"] == {}
    finally:
        bed.env.json("offload", "auto", "--enable", "--policy", "threshold")
        bed.pip_on("host1", "uninstall", "--yes", "grid-policy-flaky")
