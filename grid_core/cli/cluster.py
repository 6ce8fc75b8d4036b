"""`grid cluster ...`: the cluster's life. The backend (e.g. ray) adds its columns to status."""

from __future__ import annotations

from typing import Any

import click

from grid_core.cli.context import config_option, console, json_option, print_json, state


@click.group()
def cluster() -> None:
    """Start, stop and inspect the cluster."""


def node_rows(cluster_obj: Any) -> list[dict[str, Any]]:
    """One row per node: what the transport reaches and what the metrics sources read."""
    cfg = cluster_obj.config
    readings = cluster_obj.sample(cfg.nodes)
    rows = []
    for node in cfg.nodes:
        out = readings[node.name]
        m = out.value
        rows.append({
            "name": node.name,
            "host": node.host,
            "role": "head" if node.is_head else "worker",
            "transport": node.transport_name,
            "reachable": out.error is None,
            "error": out.error,
            "alive": None,  # the backend's view; filled in by a backend
            "cpus": node.cpu_count if node.cpu_count is not None else (m.cpu_count if m else None),
            "gpus": node.gpu_count if node.gpu_count is not None else (len(m.gpus) if m else None),
            "memory_bytes": int(node.memory_gb * 2**30) if node.memory_gb is not None
            else (m.memory_total_bytes if m else None),
            "cpu_percent": m.cpu_percent if m else None,
            "memory_percent": m.memory_percent if m else None,
            "swap_percent": m.swap_percent if m else None,
            "load1": m.load1 if m else None,
            "gpu_percent": m.gpu_percent if m else None,
            "metrics_source": m.source if m else None,
        })
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


@cluster.command()
@json_option
@config_option
def status(as_json: bool) -> None:
    """Each node's reachability, resources and live load."""
    with state().cluster() as c:
        rows = node_rows(c)
        if as_json:
            print_json({"cluster": c.config.name, "source": c.config.source, "nodes": rows})
            return
    from rich.table import Table

    table = Table(title=f"cluster {c.config.name} ({c.config.source})", box=None, header_style="bold")
    for column in ("node", "host", "role", "reachable", "cpus", "gpus", "cpu", "mem", "swap", "load", "gpu"):
        table.add_column(column)
    for r in rows:
        reach = "[green]yes[/]" if r["reachable"] else f"[red]no[/] ({r['error']})"
        table.add_row(r["name"], r["host"], r["role"], reach, str(r["cpus"] or "-"), str(r["gpus"] or 0),
                      _pct(r["cpu_percent"]), _pct(r["memory_percent"]), _pct(r["swap_percent"]),
                      "-" if r["load1"] is None else f"{r['load1']:.2f}", _pct(r["gpu_percent"]))
    console().print(table)
