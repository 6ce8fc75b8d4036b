"""`grid memory put|get|ls|rm|stats`: the pool from the shell."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from grid_core.cli import completion
from grid_core.cli.context import config_option, json_option, print_json, shortcut_client, state, tried
from grid_core.errors import GridError
from grid_plugin_memory_pool.keys import check_key


def _ask(action: str, data: bytes | None = None, data_file: str | None = None,
         on_data: Callable[[bytes], object] | None = None, into: str | None = None, **params: Any) -> Any:
    """One `memory` request to the grid service on the head, from wherever this runs; its result.
    One that carries no data goes by the kept shortcut where one answers (grid_core/shortcut.py)."""
    if action != "put" and data is None and data_file is None and on_data is None and into is None:
        found = shortcut_client()
        if found is not None:
            answered, result = tried(lambda: found[0].service_op("memory", {"action": action, **params}))
            if answered:
                return result
    from grid_plugin_ray_backend.api import request

    with state().cluster() as c:
        if action == "put" and params.get("node") is None:  # this machine's node, when it is one
            params["node"] = next((n.name for n in c.config.nodes if n.transport_name == "local"), None)
        return request(c.config, c, "memory", {"action": action, **params}, data=data, data_file=data_file,
                       on_data=on_data, into=into).result


def _complete_keys(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[Any]:
    """Keys the pool holds, from the service, where the head is this machine (completion.py)."""

    def ask(c: Any) -> list[tuple[str, str]]:
        from grid_core.types import PoolEntry, wire
        from grid_plugin_ray_backend.api import request

        entries = wire().structure(request(c.config, c, "memory", {"action": "ls"}).result, list[PoolEntry])
        return [(e.key, f"{e.size} bytes on {e.node}") for e in entries]

    return completion.from_service(ctx, incomplete, ask)


@click.group()
def memory() -> None:
    """Named data kept in the cluster's memory."""


@memory.command()
@click.argument("key", shell_complete=_complete_keys)
@click.argument("source", metavar="FILE|-")
@click.option("--node", "-n", default=None,
              shell_complete=completion.nodes, help="Keep it on this node [this machine's node].")
@click.option("--replace", is_flag=True, help="Overwrite an existing entry.")
@click.option("--evict", type=click.Choice(["lru"]), default=None,
              help="Make room by evicting the least recently read entries.")
@config_option
def put(key: str, source: str, node: str | None, replace: bool, evict: str | None) -> None:
    """Store FILE (or stdin with -) under KEY."""
    check_key(key)
    data, data_file = None, None
    try:
        if source == "-":
            data = sys.stdin.buffer.read()
            size = len(data)
        else:
            with open(source, "rb") as f:
                info = os.fstat(f.fileno())
                if stat.S_ISREG(info.st_mode):  # read where it goes: to another machine as it is
                    size, data_file = info.st_size, source
                else:  # a pipe (<(command)) is read once, here
                    data = f.read()
                    size = len(data)
    except OSError as exc:
        raise GridError(f"cannot read {source}: {exc.strerror or exc}") from None
    evicted = _ask("put", data, data_file, key=key, node=node, replace=replace, evict=evict)["evicted"]
    for victim in evicted:
        click.echo(f"evicted {victim}", err=True)
    click.echo(f"stored {key} ({size} bytes)")


@memory.command()
@click.argument("key", shell_complete=_complete_keys)
@click.option("-o", "--output", default="-", metavar="FILE|-", help="Write here [stdout].")
@config_option
def get(key: str, output: str) -> None:
    """Write the data stored under KEY."""
    check_key(key)
    if output == "-":
        _ask("get", on_data=sys.stdout.buffer.write, key=key)
        sys.stdout.buffer.flush()
        return
    # Into a file beside the target, renamed once all has come: a failed get leaves no half file.
    partial = Path(output).parent / f".grid-partial-{os.getpid()}"
    try:
        _ask("get", into=str(partial), key=key)
        os.replace(partial, output)
    except OSError as exc:
        raise GridError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


@memory.command("ls")
@json_option
@config_option
def list_entries(as_json: bool) -> None:
    """Every entry: key, node, size, created, last read, state."""
    from grid_core.types import PoolEntry, wire

    entries = wire().structure(_ask("ls"), list[PoolEntry])
    if as_json:
        print_json(entries)
        return
    from grid_core.cli.output import clock, print_table, styled

    print_table(("key", "node", "size", "created", "last read", "state", "owner"), (
        (e.key, e.node, _size(e.size), clock(e.created), clock(e.last_read),
         styled(e.state, "green" if e.state == "ok" else "red"), e.owner or "-") for e in entries))


@memory.command("rm")
@click.argument("key", shell_complete=_complete_keys)
@config_option
def remove(key: str) -> None:
    """Remove the entry KEY."""
    _ask("rm", key=check_key(key))
    click.echo(f"removed {key}")


@memory.command()
@json_option
@config_option
def stats(as_json: bool) -> None:
    """Used and capacity per node."""
    per_node: dict[str, dict[str, int]] = _ask("stats")
    if as_json:
        print_json([{"node": n, **s} for n, s in per_node.items()])
        return
    for node, s in per_node.items():
        click.echo(f"{node}: {_size(s['used'])} of {_size(s['capacity'])} used, {s['entries']} entries")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
