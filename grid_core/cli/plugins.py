"""`grid plugins list`: every plugin, its status and what it registers."""

from __future__ import annotations

import click

from grid_core import plugins as plugin_host
from grid_core.cli.context import config_option, json_option, print_json
from grid_core.cli.output import Pieces, print_table, say
from grid_core.plugins import KINDS


@click.group()
def plugins() -> None:
    """List plugins and what they register."""


@plugins.command("list")
@json_option
@config_option
def list_plugins(as_json: bool) -> None:
    """Show each plugin: distribution, version, status and registrations."""
    host = plugin_host.host()
    records = list(host.records.values())
    if as_json:
        print_json([
            {"name": r.name, "distribution": r.distribution, "version": r.version, "status": r.status,
             "reason": r.reason or None, "hooks": r.hooks}
            for r in records
        ])
    else:
        colours = {"active": "green", "blocked": "yellow", "failed": "red", "incompatible": "red"}
        rows = []
        for r in records:
            registers = "; ".join(f"{KINDS[h][0]}: {', '.join(names)}" for h, names in r.hooks.items() if names)
            status = Pieces((r.status, colours[r.status]), f" ({r.reason})" if r.reason else "")
            rows.append((r.name, r.distribution, r.version, status, registers or "-"))
        print_table(("plugin", "distribution", "version", "status", "registers"), rows)
    for conflict in host.conflicts():
        say(("conflict:", "red"), f" {conflict}", err=True)
