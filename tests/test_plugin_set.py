"""Where each plugin distribution counts, and what a node's set is told (grid_core.plugin_set)."""

from __future__ import annotations

import types
from collections.abc import Iterator

from grid_core.hookspecs import hookimpl
from grid_core.plugin_set import HEAD, HERE, NODES, Here, drift_line, installed
from grid_core.plugins import PluginHost
from grid_core.types import GridCommand, GridMetricsSource, GridOffloadPolicy, GridScheduler, GridTransport


def _plugin(**hooks: object) -> object:
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def policies() -> Iterator[GridOffloadPolicy]:
    yield GridOffloadPolicy(name="p", summary="s", factory=object)


def sources() -> Iterator[GridMetricsSource]:
    yield GridMetricsSource(name="m", summary="s", factory=object)


def commands() -> Iterator[GridCommand]:
    yield GridCommand(name="c", summary="s", import_path="x:y")


def transports() -> Iterator[GridTransport]:
    yield GridTransport(name="t", summary="s", factory=lambda node, cluster: None)  # type: ignore[arg-type,return-value]


def host() -> PluginHost:
    h = PluginHost(no_plugins=True)
    h.add(_plugin(grid_offload_policies=policies), "policy", "dist-policy", "1.0")
    h.add(_plugin(grid_metrics_sources=sources), "metrics", "dist-metrics", "2.0")
    h.add(_plugin(grid_schedulers=lambda: iter([GridScheduler(name="s", summary="s", factory=object)])),
          "scheduler", "dist-scheduler", "5.0")
    h.add(_plugin(grid_commands=commands, grid_transports=transports), "cli", "dist-cli", "3.0")
    # One distribution with a CLI-side plugin and a policy counts where the policy does.
    h.add(_plugin(grid_commands=lambda: iter([GridCommand(name="c2", summary="s", import_path="x:z")])),
          "mixed-cli", "dist-mixed", "4.0")
    h.add(_plugin(grid_offload_policies=lambda: iter([GridOffloadPolicy(name="p2", summary="s", factory=object)])),
          "mixed-policy", "dist-mixed", "4.0")
    return h


def test_each_distribution_counts_where_its_widest_plugin_runs() -> None:
    here = Here(host())
    assert here.counts_on["dist-policy"] == HEAD
    assert here.counts_on["dist-metrics"] == NODES
    assert here.counts_on["dist-cli"] == HERE
    assert here.counts_on["dist-scheduler"] == HEAD  # the queue runs in the service
    assert here.counts_on["dist-mixed"] == HEAD
    assert here.counts_on["grid-core"] == NODES
    assert here.counts("dist-policy", is_head=True) and not here.counts("dist-policy", is_head=False)
    assert not here.counts("dist-cli", is_head=True) and here.counts("dist-metrics", is_head=False)


def test_a_node_is_told_what_differs_where_it_counts_and_the_fix() -> None:
    here = Here(host())
    core = here.version["grid-core"]
    theirs = {"grid-core": core, "dist-policy": "0.9", "dist-metrics": "2.0", "dist-mixed": "4.0",
              "dist-scheduler": "5.0"}
    assert here.differences("w1", False, theirs) == []  # the policy counts on the head only; no CLI plugins
    assert here.differences("h", True, theirs) == [
        "dist-policy 0.9 on h, 1.0 here (it counts on the head): run `grid cluster install --node h`"]
    assert here.differences("w1", False, {"grid-core": core}) == [
        "no dist-metrics on w1, 2.0 here (it counts on every node): run `grid cluster install --node w1`"]
    assert here.extras({**theirs, "dist-gpu": "5.1"}) == ["dist-gpu 5.1"]


def test_a_failed_plugin_counts_nowhere() -> None:
    h = host()
    h.add(_plugin(grid_metrics_sources=lambda: iter([1])), "bad", "dist-bad", "1.0")  # yields the wrong type
    here = Here(h)
    assert h.records["bad"].status == "failed"
    assert here.counts_on["dist-bad"] is None and here.status["dist-bad"] == "failed"
    assert here.differences("w1", False, {"grid-core": here.version["grid-core"], "dist-metrics": "2.0"}) == []


def test_drift_names_the_changes_and_what_must_restart() -> None:
    here = Here(host())
    core = here.version["grid-core"]
    same = {"grid-core": core, "dist-policy": "1.0", "dist-metrics": "2.0", "dist-mixed": "4.0",
            "dist-scheduler": "5.0"}
    assert here.drift(same) is None
    assert here.drift({**same, "dist-cli": "0.1"}) is None  # a CLI plugin runs in no service
    policy = here.drift({**same, "dist-policy": "0.9"})
    assert policy is not None and policy.restart == ("service",)
    assert [(c.distribution, c.started_with, c.now) for c in policy.changes] == [("dist-policy", "0.9", "1.0")]
    both = here.drift({**same, "dist-metrics": "1.0", "dist-gone": "1.0"})
    assert both is not None and both.restart == ("service", "agents")
    assert drift_line(both) == (
        "the plugin set here changed since the grid service started (dist-gone 1.0 -> removed, dist-metrics "
        "1.0 -> 2.0): restart the service and the agents to use it with `grid cluster start --restart-service`")


def test_installed_lists_grid_core_and_every_plugin_distribution_without_importing_them() -> None:
    found = installed()
    assert "grid-core" in found and "grid-plugin-ray-backend" in found and "grid-test-scripted-metrics" in found
