"""Per-node progress on stderr while a long operation runs, and the per-node outcome table after it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from grid_core.cli.context import console, err_console, print_json

if TYPE_CHECKING:
    from rich.live import Live

    from grid_core.types import NodeOutcome


class NodeProgress:
    """`progress(node, message)`: a live table on a terminal, one line per step otherwise (logs, CI)."""

    def __init__(self, title: str, nodes: Sequence[str]) -> None:
        self.title = title
        self.began = time.monotonic()
        self.steps: dict[str, tuple[str, float]] = {name: ("waiting", self.began) for name in nodes}
        self.lock = threading.Lock()
        self.live: Live | None = None

    def __enter__(self) -> NodeProgress:
        if sys.stderr.isatty():
            from rich.live import Live

            self.live = Live(get_renderable=self._table, console=err_console(), refresh_per_second=8,
                             transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def __call__(self, node: str, message: str) -> None:
        with self.lock:
            self.steps[node] = (message, time.monotonic())
        if self.live is None:
            err_console().print(f"[dim]{time.monotonic() - self.began:6.1f}s[/] {node}: {message}")

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title=self.title, box=None, header_style="bold", title_justify="left")
        for column in ("node", "step", "since"):
            table.add_column(column)
        now = time.monotonic()
        with self.lock:
            for node, (message, since) in self.steps.items():
                table.add_row(node, message, f"{now - since:.1f}s")
        return table


def report(title: str, outcomes: Sequence[NodeOutcome], as_json: bool) -> int:
    """Print one row per node with its reason when it failed; the exit status (1 if any failed)."""
    failed = [o for o in outcomes if not o.ok]
    if as_json:
        print_json({"ok": not failed, "nodes": [
            {"name": o.node, "ok": o.ok, "action": o.action, "reason": o.reason or None,
             "seconds": round(o.seconds, 3)} for o in outcomes]})
    else:
        from rich.table import Table

        table = Table(title=title, box=None, header_style="bold", title_justify="left")
        for column in ("node", "result", "took", "reason"):
            table.add_column(column)
        for o in outcomes:
            result = f"[green]{o.action}[/]" if o.ok else f"[red]{o.action}[/]"
            table.add_row(o.node, result, f"{o.seconds:.1f}s" if o.seconds else "-", o.reason or "")
        console().print(table)
    return 1 if failed else 0
