"""What `cluster start` and `doctor` say about a node before Ray would refuse it: a Python patch
level that differs from the head's, and a node without Ray. Pure rules, no node needed."""

from __future__ import annotations

import platform

from grid_core.cli.doctor import Probe, checks_for
from grid_core.config import structure
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
    found = Probe("python3", {"python": "3.11.2", "ray": "2.60.0", "interpreter": "python3"})
    checks = {c.name: c for c in checks_for(node, found, "2.60.0", False, "3.11.7", backend.python_problem)}
    assert checks["python"].ok is False and "install Python 3.11.7" in checks["python"].detail
    same = checks_for(node, Probe("python3", {"python": "3.11.7", "ray": "2.60.0"}), "2.60.0", False, "3.11.7",
                      backend.python_problem)
    assert all(c.ok for c in same)


def test_a_node_without_ray_is_told_to_run_cluster_install() -> None:
    here = local_versions()
    facts = Facts(python=platform.python_version(), executable="/usr/bin/python3", hostname="b", home="/root",
                  ssh_server_ip=None, versions={**here, "ray": None}, pids=[], raylets=[])
    problem = RayBackend.mismatch(facts)
    assert problem is not None and "ray is not installed" in problem and "run `grid cluster install`" in problem
