"""What `cluster start` and `doctor` say about a node before Ray would refuse it: a Python patch
level that differs from the head's, and a node without Ray or with another Ray than the head's.
Pure rules, no node needed; doctor's probe itself runs here with this machine's Python."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Mapping
from typing import cast

import attrs

from grid_core.cli.doctor import CHECKS, PYTHON_PROBE, SHELL_PROBE, Probe, _columns, checks_for
from grid_core.config import NodeConfig, structure
from grid_core.types import Backend, Check
from grid_plugin_ray_backend.backend import Facts, RayBackend, local_versions


def _backend(env: dict[str, str] | None = None) -> RayBackend:
    return RayBackend(structure({"name": "lab", "nodes": [{"name": "a", "host": "10.0.0.1", "role": "head"},
                                                        {"name": "b", "host": "10.0.0.2"}],
                                 "backend": {"env": env or {}}}, "test"))


def test_a_different_patch_level_is_refused_with_the_remedy_unless_ray_is_told_minor() -> None:
    problem = _backend().python_problem("3.11.2", "3.11.7")
    assert problem is not None
    assert "3.11.2" in problem and "3.11.7 on the head" in problem and "install Python 3.11.7 on the node" in problem
    assert 'RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL = "minor"' in problem
    assert _backend().python_problem("3.11.7", "3.11.7") is None
    assert _backend({"RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL": "minor"}).python_problem("3.11.2", "3.11.7") is None
    assert "version" in (_backend({"RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL": "minor"})
                         .python_problem("3.12.1", "3.11.7") or "")


def test_doctor_fails_a_worker_whose_patch_level_differs_from_the_head_s() -> None:
    backend = _backend()
    node = backend.config.nodes[1]
    head = {"python": "3.11.7", "engine": "2.60.0"}
    found = Probe("python3", {"python": "3.11.2", "engine": "2.60.0", "interpreter": "python3"})
    checks = {c.name: c for c in checks_for(node, found, head, False, backend)}
    assert checks["python"].ok is False and "install Python 3.11.7" in checks["python"].detail
    same = checks_for(node, Probe("python3", {"python": "3.11.7", "engine": "2.60.0"}), head, False, backend)
    assert all(c.ok for c in same) and [c.name for c in same] == ["reachable", "host_key", "auth", "python", "ray"]


def test_doctor_s_ray_check_wants_the_head_s_version_with_the_remedy() -> None:
    backend = _backend()
    head = {"python": "3.11.7", "engine": "2.60.0"}
    assert backend.engine_check({"engine": "2.0.0"}, head, is_head=False, python="python3") == \
        Check("ray", False, "2.0.0, but the head has 2.60.0: install ray==2.60.0")
    assert backend.engine_check({"engine": "2.60.0"}, head, is_head=False, python="python3") == \
        Check("ray", True, "2.60.0")
    assert backend.engine_check({"engine": "2.60.0"}, None, is_head=False, python="python3") == \
        Check("ray", True, "2.60.0 (the head's version is unknown)")
    assert backend.engine_check({"engine": "2.0.0"}, head, is_head=True, python="python3") == \
        Check("ray", True, "2.0.0 (head)")
    missing = backend.engine_check({"engine_error": "ModuleNotFoundError: No module named 'ray'"}, head,
                                   is_head=False, python="/opt/py/bin/python3")
    assert missing == Check("ray", False, "`import ray` fails with /opt/py/bin/python3: ModuleNotFoundError: "
                                          "No module named 'ray'")
    assert backend.engine_check({}, head, is_head=False, python="python3").detail.endswith(": no answer")


class _Engine:
    """A backend's doctor rules, as the core calls them: Check records in, what it was asked kept."""

    def __init__(self, verdict: Check) -> None:
        self.verdict = verdict
        self.asked: list[tuple[Mapping[str, str], Mapping[str, str] | None, bool, str]] = []

    def python_problem(self, version: str, head_version: str | None) -> str | None:
        return None

    def engine_check(self, facts: Mapping[str, str], head_facts: Mapping[str, str] | None, *,
                     is_head: bool, python: str) -> Check:
        self.asked.append((facts, head_facts, is_head, python))
        return self.verdict


def test_doctor_shows_the_backend_s_verdict_and_without_a_backend_the_other_checks() -> None:
    node = NodeConfig(name="w", gpu_count=1)
    facts = {"python": "3.11.7", "engine": "1.2", "nvidia": "nvidia-smi", "interpreter": "python3"}
    head = {"python": "3.11.7", "engine": "1.3"}
    engine = _Engine(Check("eng", False, "1.2, not 1.3"))
    backend = cast(Backend, engine)  # the two methods doctor's checks call
    checks = checks_for(node, Probe("python3", facts), head, False, backend)
    assert [c.name for c in checks] == ["reachable", "python", "eng", "gpu"]
    assert checks[2] == engine.verdict and engine.asked == [(facts, head, False, "python3")]
    without = checks_for(node, Probe("python3", facts), head, False)
    assert [c.name for c in without] == ["reachable", "python", "gpu"] and all(c.ok for c in without)
    # No Python, no engine check to ask for.
    engine.asked.clear()
    no_python = checks_for(node, Probe("python3", {"python_missing": "1"}), head, False, backend)
    assert [c.name for c in no_python] == ["reachable", "python", "gpu"]
    assert engine.asked == []


def _probe(engine: str) -> dict[str, str]:
    result = subprocess.run(["sh", "-c", SHELL_PROBE, "grid-doctor", PYTHON_PROBE, engine, "no-such-python",
                             sys.executable], capture_output=True, text=True, timeout=60, check=True)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_the_probe_runs_the_backend_s_engine_lines_and_reports_what_they_raise() -> None:
    here = ".".join(map(str, sys.version_info[:3]))
    found = _probe("import sys\nprint('engine=' + '.'.join(map(str, sys.version_info[:3])))\n")
    assert found["interpreter"] == sys.executable and found["python"] == here and found["engine"] == here
    assert "engine_error" not in found
    failed = _probe("import no_such_engine_module\n")
    assert failed["python"] == here and "engine" not in failed
    assert failed["engine_error"].startswith("ModuleNotFoundError: No module named 'no_such_engine_module'")
    broken = _probe("print(\n")  # even a syntax error stays the engine's, after the node's Python answered
    assert broken["python"] == here and broken["engine_error"].startswith("SyntaxError")
    assert not {"engine", "engine_error"} & set(_probe(""))  # no backend: nothing asked


def test_a_node_without_ray_is_told_to_run_cluster_install() -> None:
    here = local_versions()
    facts = Facts(python=platform.python_version(), executable="/usr/bin/python3", hostname="b", home="/root",
                  ssh_server_ip=None, versions={**here, "ray": None}, pids=[], raylets=[])
    problem = RayBackend._version_mismatch(facts)
    assert problem is not None and "ray is not installed" in problem and "run `grid cluster install`" in problem


def test_the_table_shows_the_backend_s_check_by_its_name_before_the_gpu_s() -> None:
    row = {"checks": [attrs.asdict(c) for c in (Check("reachable", True, "via ssh"), Check("ray", True, "2.60.0"))]}
    assert _columns([row]) == ("reachable", "host_key", "auth", "python", "plugins", "ray", "gpu")
    assert _columns([]) == CHECKS and "ray" not in CHECKS
