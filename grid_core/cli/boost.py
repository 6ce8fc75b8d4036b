"""`grid boost ...`: a node borrowing capacity on another, kept by the cluster's controller."""

from __future__ import annotations

import time
from typing import Any

import click

from grid_core.cli.context import config_option, console, json_option, print_json
from grid_core.cli.offload import control

FIELDS = ("id", "target", "source", "resource", "amount", "priority", "expires_at", "state")


@click.group()
def boost() -> None:
    """Borrow capacity from other nodes: request, list, release."""


@boost.command()
@click.argument("target")
@click.argument("resource", type=click.Choice(["cpu", "gpu", "memory"]))
@click.argument("amount", type=click.FloatRange(min=0, min_open=True))
@click.option("--priority", type=click.Choice(["low", "normal", "high", "critical"]), default="normal",
              show_default=True, help="A higher priority may preempt lower ones when capacity is short.")
@click.option("--duration", default=None, metavar="D", help="Expire after D: 90s, 30m, 2h (default: until released).")
@click.option("--source", default=None, metavar="NODE", help="Lend from this node (default: the one with most free).")
@json_option
@config_option
def request(target: str, resource: str, amount: float, priority: str, duration: str | None, source: str | None,
            as_json: bool) -> None:
    """Let TARGET borrow AMOUNT of RESOURCE (memory in GB) on another node."""
    from grid_core.boost import parse_duration

    seconds = parse_duration(duration) if duration else None
    made = control("boost", target=target, resource=resource, amount=amount, priority=priority,
                   duration=seconds, source=source)
    if as_json:
        print_json({k: made[k] for k in FIELDS})
        return
    click.echo(f"boost {made['id']}: {amount:g} {resource} on {made['source']} for {target} ({priority})"
               + (f", {made['note']}" if made.get("note") else "")
               + (f", expires {_when(made['expires_at'])}" if made["expires_at"] else ""))


@boost.command("release")
@click.argument("boost_id")
@config_option
def release_boost(boost_id: str) -> None:
    """Free boost BOOST_ID's reservation."""
    control("boost_release", boost_id=boost_id)
    click.echo(f"released boost {boost_id}")


def _when(stamp: float | None) -> str:
    return "-" if not stamp else time.strftime("%H:%M:%S", time.localtime(stamp))


def _list(as_json: bool, everything: bool) -> None:
    boosts: list[dict[str, Any]] = control("status")["boosts"]
    if not everything:
        boosts = [b for b in boosts if b["state"] == "active"]
    if as_json:
        print_json([{k: b[k] for k in FIELDS} for b in boosts])
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in FIELDS:
        table.add_column(column.replace("_", " "))
    for b in boosts:
        table.add_row(b["id"], b["target"], b["source"], b["resource"], f"{b['amount']:g}", b["priority"],
                      _when(b["expires_at"]), b["state"])
    console().print(table)


@boost.command("list")
@click.option("--all", "everything", is_flag=True, help="Include released, expired and preempted boosts.")
@json_option
@config_option
def list_boosts(everything: bool, as_json: bool) -> None:
    """Active boosts."""
    _list(as_json, everything)


@boost.command("status")
@json_option
@config_option
def boost_status(as_json: bool) -> None:
    """Every boost this cluster has had, with its state."""
    _list(as_json, everything=True)
