"""Per-node progress on stderr while a long operation runs, and the per-node outcome table after it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from grid_core.cli.context import print_json
from grid_core.cli.output import console, err_console, say, styled, table

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
            say((f"{time.monotonic() - self.began:6.1f}s", "dim"), f" {node}: {message}", err=True)

    def _table(self) -> Any:
        now = time.monotonic()
        with self.lock:
            rows = [(node, message, f"{now - since:.1f}s") for node, (message, since) in self.steps.items()]
        return table(("node", "step", "since"), rows, title=self.title)


def report(title: str, outcomes: Sequence[NodeOutcome], as_json: bool) -> int:
    """Print one row per node with its reason when it failed; the exit status (1 if any failed)."""
    failed = [o for o in outcomes if not o.ok]
    if as_json:
        print_json({"ok": not failed, "nodes": [
            {"name": o.node, "ok": o.ok, "action": o.action, "reason": o.reason or None,
             "seconds": round(o.seconds, 3)} for o in outcomes]})
    else:
        console().print(table(("node", "result", "took", "reason"), (
            (o.node, styled(o.action, "green" if o.ok else "red"), f"{o.seconds:.1f}s" if o.seconds else None,
             o.reason or "") for o in outcomes), title=title))
    return 1 if failed else 0
