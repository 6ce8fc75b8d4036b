"""The seed's spellings as grid's settings (docs/config.md, "The seed's keys").

The seed's YAML writes offload marks, boost rules and priorities in its `resource_sharing`
blocks; `map_seed` turns those into grid's own settings, so the rest of grid reads only those.
Seed keys that mean nothing in grid become notes for `config validate`.
"""

from __future__ import annotations

from typing import Any

import attrs

from grid_core.config.models import METRICS, ClusterConfig, Marks, RuntimeEnv


def _percent(value: float) -> float:
    """The seed's percentages: a fraction when at most 1 (`0.8`), else percent (`80`)."""
    return round(value * 100, 9) if value <= 1 else value  # round: 0.29 * 100 is 28.999999999999996




# Seed keys grid accepts without effect, with why (one line each from `config validate`).
EXECUTION_NO_EFFECT = {
    "default_nodes": "grid run picks its node with --node, else the scheduler",
    "default_gpus_per_node": "grid run's --gpus says what a job needs",
}
SHARING_NO_EFFECT = {
    ("mode",): "grid always offloads from a held head and lends by boosts",
    ("policy",): "offload.policy names grid's policy",
    ("rebalance_interval_seconds",): "grid does not rebalance on a timer",
    ("check_interval",): "boosts are granted on request, not offered on a timer",
    ("thresholds", "excess_threshold"): "lending is decided by boost.lend",
    ("auto_offload", "head_only_mode"): "grid's offload always watches only the head",
}


def _seed_values(config: ClusterConfig) -> dict[tuple[str, ...], tuple[Any, str]]:
    """Every written key of the seed's resource_sharing blocks -> (value, its path); the block under
    `execution` wins key by key over the top-level one."""
    values: dict[tuple[str, ...], tuple[Any, str]] = {}

    def walk(obj: Any, key: tuple[str, ...], path: str) -> None:
        if attrs.has(type(obj)):
            for field in attrs.fields(type(obj)):
                value = getattr(obj, field.name)
                if value is not None:
                    walk(value, (*key, field.name), f"{path}.{field.name}")
        elif isinstance(obj, dict):
            for name, value in obj.items():
                values[(*key, name)] = (value, f"{path}[{name!r}]")
        else:
            values[key] = (obj, path)

    for block, path in ((config.resource_sharing, "resource_sharing"),
                        (config.execution.resource_sharing, "execution.resource_sharing")):
        if block is not None:
            walk(block, (), path)
    return values


def map_seed(config: ClusterConfig, problems: list[str]) -> tuple[ClusterConfig, list[str]]:
    """The seed's spellings as grid's settings (docs/config.md, "The seed's keys"); returns the
    config without the seed-only blocks, and the notes for keys that have no effect."""
    seed = _seed_values(config)
    notes = [f"note: execution.{key} has no effect in grid: {why}"
             for key, why in EXECUTION_NO_EFFECT.items() if getattr(config.execution, key) is not None]
    notes += [f"note: {path} has no effect in grid: {why}"
              for key, why in SHARING_NO_EFFECT.items() if (path := seed.get(key, (None, ""))[1])]

    def value(*key: str) -> Any:
        return seed.get(key, (None, ""))[0]

    # Offload: marks, interval, cooldown, on/off. auto_offload is the more specific block, so it wins.
    offload = config.offload
    marks = {"high": attrs.asdict(offload.high), "low": attrs.asdict(offload.low)}
    origin = {(level, m): f"offload.{level}.{m}" for level in marks for m in METRICS}
    for m in METRICS:
        for level, key in (("high", ("thresholds", f"{m}_pressure_high")), ("low", ("thresholds", f"{m}_pressure_low")),
                           ("high", ("auto_offload", f"{m}_threshold"))):
            if key in seed:
                marks[level][m], origin[(level, m)] = _percent(seed[key][0]), seed[key][1]
        if origin[("high", m)] != f"offload.high.{m}" and origin[("low", m)] == f"offload.low.{m}":
            # Only the high mark was given: keep the default band below it, as `offload auto` does.
            marks["low"][m] = min(marks["low"][m], marks["high"][m] * 0.75)
        if marks["low"][m] > marks["high"][m]:
            problems.append(f"{origin[('low', m)]}: {marks['low'][m]:g}% must not exceed "
                            f"{origin[('high', m)]} ({marks['high'][m]:g}%)")
    interval = value("auto_offload", "check_interval_seconds") or value("monitoring_interval_seconds")
    enabled, cooldown = value("auto_offload", "enabled"), value("auto_offload", "cooldown_seconds")
    offload = attrs.evolve(
        offload, high=Marks(**marks["high"]), low=Marks(**marks["low"]),
        interval_seconds=interval or offload.interval_seconds,
        enabled=offload.enabled if enabled is None else enabled,
        cooldown_seconds=offload.cooldown_seconds if cooldown is None else cooldown)

    # Boosts: on/off, default duration, per-source count, and when a node may lend.
    boost = config.boost
    minutes, expiry = value("allocation_timeout_minutes"), value("offer_expiry")
    lend_keys = {"cpu_percent_max": "cpu_percent_max", "memory_percent_max": "memory_percent_max",
                 "gpu_utilization_max": "gpu_percent_max", "cpu_min_cores": "cpu_min_free",
                 "memory_min_gb": "memory_min_free_gb", "gpu_memory_min_mb": "gpu_memory_min_free_mb"}
    lend = {grid: value("thresholds", key) for key, grid in lend_keys.items() if ("thresholds", key) in seed}
    lend = {k: _percent(v) if k.endswith("_percent_max") else v for k, v in lend.items()}
    boost = attrs.evolve(
        boost, enabled=boost.enabled if value("enabled") is None else value("enabled"),
        default_duration_seconds=minutes * 60 if minutes else expiry or boost.default_duration_seconds,
        max_per_source=value("max_offers_per_node") or boost.max_per_source,
        lend=attrs.evolve(boost.lend, **lend))

    # Source priorities: the node's own resource_sharing.priority, else the cluster's table.
    names = {n.name for n in config.nodes}
    problems += [f"{path}: no node named {key[-1]!r}" for key, (_, path) in seed.items()
                 if key[:2] == ("priorities", "worker_nodes") and key[-1] not in names]
    nodes = []
    for node in config.nodes:
        keys: list[tuple[str, ...]] = [("priorities", "master_node")] if node is config.head else []
        keys.append(("priorities", "worker_nodes", node.name))
        own = node.resource_sharing.priority if node.resource_sharing else None
        priority = own if own is not None else next((seed[k][0] for k in keys if k in seed), None)
        nodes.append(node if priority is None else attrs.evolve(node, priority=priority))

    runtime = config.execution.runtime_env.env_vars
    execution = attrs.evolve(config.execution, environment={**runtime, **config.execution.environment},
                             runtime_env=RuntimeEnv(), resource_sharing=None)
    mapped = attrs.evolve(config, nodes=nodes, offload=offload, boost=boost, execution=execution,
                          resource_sharing=None)
    return mapped, notes


