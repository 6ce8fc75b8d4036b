"""Shell completion: `grid completion bash|zsh|fish` prints click's script for that shell.

Node names complete from the config. Job ids and memory keys complete from the grid service, but
only where asking it is fast and local: the head is this machine (its Unix socket). Completion
runs while a user types, so it never opens an SSH connection, and a service that is slow to
answer gives no candidates rather than a stalled prompt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from grid_core.cluster import Cluster
    from grid_core.config import ClusterConfig

SHELLS = ("bash", "zsh", "fish")
ANSWER_SECONDS = 2.0  # the longest a completion waits for the service
INSTALL = {
    "bash": 'eval "$(grid completion bash)"    # in ~/.bashrc',
    "zsh": 'eval "$(grid completion zsh)"     # in ~/.zshrc',
    "fish": "grid completion fish > ~/.config/fish/completions/grid.fish",
}


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL.

    \b
    bash:  eval "$(grid completion bash)"    # in ~/.bashrc
    zsh:   eval "$(grid completion zsh)"     # in ~/.zshrc
    fish:  grid completion fish > ~/.config/fish/completions/grid.fish
    """
    from click.shell_completion import get_completion_class

    from grid_core.cli import cli

    script_class = get_completion_class(shell)
    assert script_class is not None  # every name in SHELLS is one of click's
    click.echo(script_class(cli, {}, "grid", "_GRID_COMPLETE").source())


def _config(ctx: click.Context) -> ClusterConfig | None:
    """The config this command line would use (its -c, else the lookup), read quietly: nothing a
    completion prints may reach the terminal, and a broken config just completes nothing."""
    from grid_core import config
    from grid_core.cli.context import GridContext

    root = ctx.find_root().obj
    explicit = root.config_path if isinstance(root, GridContext) else None
    try:
        path, _found = config.find_config_path(explicit)
        return config.embedded_default() if path is None else config.load_file(path)
    except Exception:
        return None


def _items(values: Iterable[tuple[str, str]], incomplete: str) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(value, help=help_text or None) for value, help_text in values
            if value.startswith(incomplete)]


def nodes(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Node names from the config, each with its role and host."""
    cfg = _config(ctx)
    if cfg is None:
        return []
    return _items(((n.name, f"{'head' if n is cfg.head else 'worker'} {n.host}") for n in cfg.nodes), incomplete)


def from_service(ctx: click.Context, incomplete: str,
                 ask: Callable[[Cluster], Iterable[tuple[str, str]]]) -> list[CompletionItem]:
    """Candidates `ask(cluster)` reads from the service, when the head is this machine and it
    answers within ANSWER_SECONDS; else none."""
    cfg = _config(ctx)
    if cfg is None or cfg.head.transport_name != "local":
        return []
    found: list[tuple[str, str]] = []

    def read() -> None:
        from grid_core import plugins
        from grid_core.cluster import Cluster

        try:
            with Cluster(cfg, plugins.host()) as cluster:
                found.extend(ask(cluster))
        except Exception:  # not running, no service, no plugin: nothing to offer
            pass

    reader = threading.Thread(target=read, daemon=True)  # left behind if slow; the shell's process ends
    reader.start()
    reader.join(ANSWER_SECONDS)
    return [] if reader.is_alive() else _items(found, incomplete)


def job_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Job ids from the service, each with its state and command."""

    def ask(cluster: Cluster) -> Iterable[tuple[str, str]]:
        from grid_core.backends import load_backend
        from grid_core.types import JobRecord, wire

        found = wire().structure(load_backend(cluster.config).jobs(cluster), list[JobRecord])
        return [(j.id, f"{j.state} {' '.join(j.argv)}"[:60]) for j in found]

    return from_service(ctx, incomplete, ask)

