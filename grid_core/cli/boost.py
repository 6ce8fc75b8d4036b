"""`grid boost ...`: a node borrowing capacity on another, kept by the cluster's controller."""

from __future__ import annotations

import click

from grid_core.cli import completion
from grid_core.cli.context import FiniteFloat, ask_backend, config_option, json_option, print_json
from grid_core.cli.offload import ask
from grid_core.cli.output import clock, console, table
from grid_core.cli.run import gpu_types_option, size_option
from grid_core.errors import GridError

COLUMNS = ("id", "target", "source", "resource", "amount", "priority", "expires at", "state", "user")


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """--duration as seconds, checked before anything is asked of the cluster."""
    from grid_core.boost import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except GridError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def boost() -> None:
    """Borrow capacity from other nodes: request, list, release."""


@boost.command()
@click.argument("target", shell_complete=completion.nodes)
@click.argument("resource", type=click.Choice(["cpu", "gpu", "memory"]))
@click.argument("amount", type=FiniteFloat(min=0, min_open=True))
@click.option("--priority", type=click.Choice(["low", "normal", "high", "critical"]), default="normal",
              show_default=True, help="A higher priority may preempt lower ones when capacity is short.")
@click.option("--duration", default=None, metavar="D", callback=_duration,
              help="Expire after D: 90s, 30m, 2h (default: until released).")
@click.option("--source", default=None, metavar="NODE",
              shell_complete=completion.nodes, help="Lend from this node (default: the one with most free).")
@click.option("--gpu-type", "gpu_types", multiple=True, metavar="MODELS", callback=gpu_types_option,
              help="For gpu: only GPUs of these models, e.g. A100 or 4090,3090.")
@click.option("--gpu-memory", "gpu_memory", default=None, metavar="SIZE", callback=size_option,
              help="For gpu: only GPUs with at least this much memory in all, e.g. 20G.")
@json_option
@config_option
def request(target: str, resource: str, amount: float, priority: str, duration: float | None, source: str | None,
            gpu_types: tuple[str, ...], gpu_memory: int, as_json: bool) -> None:
    """Let TARGET borrow AMOUNT of RESOURCE (memory in GB) on another node."""
    if (gpu_types or gpu_memory) and resource != "gpu":
        raise click.UsageError("--gpu-type and --gpu-memory go with a boost of gpu")
    made = ask(lambda b, c: b.boost(c, target=target, resource=resource, amount=amount, priority=priority,
                                    duration=duration, source=source, gpu_types=gpu_types,
                                    gpu_memory_bytes=gpu_memory))
    if as_json:
        print_json(made)
        return
    click.echo(f"boost {made.id}: {amount:g} {resource} on {made.source} for {target} ({priority})"
               + (f", {made.note}" if made.note else "")
               + (f", expires {clock(made.expires_at)}" if made.expires_at else ""))


@boost.command("release")
@click.argument("boost_id")
@config_option
def release_boost(boost_id: str) -> None:
    """Free boost BOOST_ID's reservation."""
    ask(lambda b, c: b.release_boost(c, boost_id))
    click.echo(f"released boost {boost_id}")


def _list(as_json: bool, everything: bool) -> None:
    boosts = list(ask_backend("offload_status").boosts)
    if not everything:
        boosts = [b for b in boosts if b.state == "active"]
    if as_json:
        print_json(boosts)
        return
    console().print(table(COLUMNS, (
        (b.id, b.target, b.source, b.resource, f"{b.amount:g}", b.priority, clock(b.expires_at), b.state,
         b.user or "-") for b in boosts)))


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
