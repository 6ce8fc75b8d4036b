"""`grid config init|validate|show`."""

from __future__ import annotations

from pathlib import Path

import click

from grid_core.cli.context import config_option, print_json, state
from grid_core.errors import GridError

STARTER = '''\
# grid cluster config. Every key: docs/config.md. Check it with `grid config validate`.
name = "my-cluster"

# One [[nodes]] table per machine. The head is the node with role = "head" (else the first).
# A node on this machine uses the `local` transport; any other host is reached over `ssh`.
[[nodes]]
name = "head"
host = "localhost"
role = "head"
# cpu_count = 8          # what the node offers to the cluster (default: all it has)
# gpu_count = 1
# memory_gb = 32
# tags = ["gpu"]

# [[nodes]]
# name = "worker1"
# host = "192.168.1.20"   # an address or an alias from ~/.ssh/config
# user = "me"
# role = "worker"
# ssh_key_path = "~/.ssh/id_ed25519"

[ssh]
host_key_policy = "strict"   # or "accept-new": trust unknown keys once, never changed ones
connect_timeout = 10.0

[backend]
name = "ray"
port = 6379

[offload]
enabled = false
policy = "threshold"
interval_seconds = 5.0
cooldown_seconds = 30.0

[offload.high]               # hold the head above these percentages
cpu = 80.0
memory = 70.0
gpu = 90.0

[offload.low]                # release it below these, after the cooldown
cpu = 60.0
memory = 55.0
gpu = 70.0

[boost]                      # one node borrowing capacity on another (docs/config.md)
enabled = true
# default_duration_seconds = 3600   # a boost without --duration ends after this (default: when released)
# max_per_source = 5                # the most boosts one node serves at once

# [boost.lend]               # a node breaking one of these is not chosen as a source
# cpu_percent_max = 30.0
# cpu_min_free = 1.0

[scheduler]
name = "fifo"                # orders the queue and places each job (docs/plugins.md)

# [queue]                    # the job store on the head's disk (docs/jobs.md)
# keep_records = 10000       # finished jobs kept: the newest this many, or ...
# keep_days = 30             # ... those younger than this
# keep_output_gb = 2.0       # all finished jobs' output together

[logging]
level = "WARNING"            # DEBUG, INFO, WARNING or ERROR
format = "text"              # or "json"
'''


@click.group()
def config() -> None:
    """Create, check and show the cluster config."""


@config.command()
@click.argument("path", default="grid.toml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: str, force: bool) -> None:
    """Write a commented starter config to PATH (default ./grid.toml)."""
    target = Path(path)
    try:
        # Checked inside the try: a name the file system refuses (too long, a component that is a
        # file) fails here already, and is an error about PATH, not grid's.
        if target.exists() and not force:
            raise GridError(f"{target} already exists; pass --force to overwrite it")
        target.write_text(STARTER, encoding="utf-8")
    except OSError as exc:
        raise GridError(f"cannot write {target}: {exc.strerror or exc}") from None
    click.echo(f"wrote {target}; check it with: grid config validate -c {target}")


@config.command()
@config_option
def validate() -> None:
    """Check the config and report every problem; seed keys without effect in grid are noted."""
    cfg = state().config()
    for note in cfg.notes:
        click.echo(note, err=True)
    click.echo(f"{cfg.source}: valid ({len(cfg.nodes)} node{'s' if len(cfg.nodes) != 1 else ''}, head {cfg.head.name})")


@config.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
def show(as_json: bool) -> None:
    """Print the effective config, defaults filled in."""
    import tomli_w

    from grid_core.config import unstructure

    cfg = state().config()
    data = unstructure(cfg)
    if as_json:
        print_json({"source": cfg.source, **data})
    else:
        click.echo(f"# source: {cfg.source}")
        click.echo(tomli_w.dumps(data), nl=False)
