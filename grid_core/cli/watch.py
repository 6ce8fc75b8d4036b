"""`grid offload watch`: a live dashboard drawn from the controller's status.

`render(status)` is a pure function of the status dictionary the backend returns, so the screen
can be drawn and checked without a terminal; `run(fetch, interval)` redraws it in place until
`q` or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

BAR = 20


def bar(percent: float | None, high: float, low: float) -> Text:
    """A bar coloured against the marks: red at or over high, yellow over low, else green."""
    if percent is None:
        return Text("-".ljust(BAR + 6), style="dim")
    filled = round(BAR * max(0.0, min(percent, 100.0)) / 100)
    colour = "red" if percent >= high else "yellow" if percent >= low else "green"
    text = Text()
    text.append("█" * filled, style=colour)
    text.append("·" * (BAR - filled), style="dim")
    text.append(f" {percent:3.0f}%")
    return text


def _when(stamp: float | None) -> str:
    return datetime.fromtimestamp(stamp).strftime("%H:%M:%S") if stamp else "-"


def render(status: dict[str, Any]) -> RenderableType:
    """The whole screen for one status snapshot."""
    high, low = status.get("thresholds", {}), status.get("low", {})
    mode = "[green]auto on[/]" if status.get("enabled") else "[dim]auto off[/]"
    marks = "  ".join(f"{m} {high.get(m, 0):.0f}%/{low.get(m, 0):.0f}%" for m in ("cpu", "memory", "gpu"))
    header = Text.from_markup(
        f"[bold]grid offload[/]  cluster {status.get('cluster', '?')}  {mode}  policy "
        f"{status.get('policy', '?')}  marks high/low: {marks}  every {status.get('interval_seconds', '?')} s")
    nodes = Table(box=None, header_style="bold", expand=False)
    for column in ("node", "role", "cpu", "memory", "gpu", "state"):
        nodes.add_column(column)
    for node in status.get("nodes", []):
        hold = node.get("hold")
        state = Text.from_markup(f"[red]held[/] ({hold})") if hold else Text.from_markup("[green]free[/]")
        nodes.add_row(node["name"], node.get("role", ""),
                      bar(node.get("cpu_percent"), high.get("cpu", 80), low.get("cpu", 60)),
                      bar(node.get("memory_percent"), high.get("memory", 70), low.get("memory", 55)),
                      bar(node.get("gpu_percent"), high.get("gpu", 90), low.get("gpu", 70)), state)
    parts: list[RenderableType] = [header, nodes]
    boosts = [b for b in status.get("boosts", []) if b.get("state") == "active"]
    if boosts:
        table = Table(title="boosts", title_justify="left", box=None, header_style="bold")
        for column in ("id", "target", "source", "amount", "priority", "expires"):
            table.add_column(column)
        for b in boosts:
            table.add_row(b["id"], b["target"], b["source"], f"{b['amount']:g} {b['resource']}", b["priority"],
                          _when(b.get("expires_at")))
        parts.append(table)
    jobs = [j for j in status.get("jobs", []) if j.get("state") == "running"]
    if jobs:
        table = Table(title="running jobs", title_justify="left", box=None, header_style="bold")
        for column in ("job", "node", "command"):
            table.add_column(column)
        for j in jobs:
            table.add_row(j["job_id"], j["node"], " ".join(j.get("argv", []))[:60])
        parts.append(table)
    events = status.get("events", [])[-6:]
    if events:
        table = Table(title="last events", title_justify="left", box=None, header_style="bold")
        for column in ("time", "event", "node", "why"):
            table.add_column(column)
        for e in events:
            table.add_row(_when(e.get("time")), e.get("kind", ""), e.get("node") or "", e.get("reason", ""))
        parts.append(table)
    parts.append(Text("q or Ctrl-C to quit", style="dim"))
    return Group(*parts)


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[], str | None]]:
    """Single key presses from a terminal on stdin (no Enter needed); nothing without one."""
    if not sys.stdin.isatty():
        yield lambda: None
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield lambda: os.read(fd, 1).decode(errors="ignore") if select.select([fd], [], [], 0)[0] else None
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(fetch: Callable[[], dict[str, Any]], interval: float) -> None:
    """Redraw in place every `interval` seconds until q or Ctrl-C."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with _keys() as key, Live(render(fetch()), console=console, auto_refresh=False, screen=False,
                             transient=False) as live:
        try:
            while True:
                deadline = time.monotonic() + interval
                while time.monotonic() < deadline:
                    if key() in ("q", "Q"):
                        return
                    time.sleep(0.05)
                live.update(render(fetch()), refresh=True)
        except KeyboardInterrupt:
            return
