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
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from grid_core.cli.output import clock, console, join, styled, table

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


def render(status: dict[str, Any]) -> RenderableType:
    """The whole screen for one status snapshot."""
    high, low = status.get("thresholds", {}), status.get("low", {})
    marks = "  ".join(f"{m} {high.get(m, 0):.0f}%/{low.get(m, 0):.0f}%" for m in ("cpu", "memory", "gpu"))
    header = join(("grid offload", "bold"), f"  cluster {status.get('cluster', '?')}  ",
                  ("auto on", "green") if status.get("enabled") else ("auto off", "dim"),
                  f"  policy {status.get('policy', '?')}  marks high/low: {marks}  "
                  f"every {status.get('interval_seconds', '?')} s")
    nodes = table(("node", "role", "cpu", "memory", "gpu", "state"), (
        (node["name"], node.get("role", ""),
         bar(node.get("cpu_percent"), high.get("cpu", 80), low.get("cpu", 60)),
         bar(node.get("memory_percent"), high.get("memory", 70), low.get("memory", 55)),
         bar(node.get("gpu_percent"), high.get("gpu", 90), low.get("gpu", 70)),
         join(("held", "red"), f" ({node['hold']})") if node.get("hold") else styled("free", "green"))
        for node in status.get("nodes", [])))
    parts: list[RenderableType] = [header, nodes]
    running = [j for j in status.get("jobs", []) if j.get("state") == "running"]
    gpus = [(node["name"], gpu) for node in status.get("nodes", []) for gpu in node.get("gpus") or ()]
    gpu_marks = (high.get("gpu", 90), low.get("gpu", 70))
    if gpus:
        parts.append(table(("node", "gpu", "use", "memory", "temp", "power", "processes (pid, memory, holder)"), (
            (name, f"{gpu['index']} {gpu.get('name', '')}", bar(gpu.get("util_percent"), *gpu_marks),
             bar(_percent(gpu.get("memory_used_bytes"), gpu.get("memory_total_bytes")), *gpu_marks),
             _unit(gpu.get("temperature_c"), "°C"), _unit(gpu.get("power_watts"), " W"),
             "; ".join(f"{p['pid']} {_mib(p.get('memory_used_bytes'))} {gpu_holder(p, name, running)}"
                       for p in gpu.get("processes") or ()) or "-")
            for name, gpu in gpus), title="gpus"))
    boosts = [b for b in status.get("boosts", []) if b.get("state") == "active"]
    if boosts:
        parts.append(table(("id", "target", "source", "amount", "priority", "expires"), (
            (b["id"], b["target"], b["source"], f"{b['amount']:g} {b['resource']}", b["priority"],
             clock(b.get("expires_at"))) for b in boosts), title="boosts"))
    if running:
        parts.append(table(("job", "node", "command"), (
            (j["job_id"], j["node"], " ".join(j.get("argv", []))[:60]) for j in running), title="running jobs"))
    events = status.get("events", [])[-6:]
    if events:
        parts.append(table(("time", "event", "node", "why"), (
            (clock(e.get("time")), e.get("kind", ""), e.get("node") or "", e.get("reason", "")) for e in events),
            title="last events"))
    parts.append(Text("q or Ctrl-C to quit", style="dim"))
    return Group(*parts)


def gpu_holder(process: dict[str, Any], node: str, jobs: list[dict[str, Any]]) -> str:
    """Who holds a GPU process: `job <id>` when its job's recorded pid on that node matches, else the
    owner its node saw (`grid job`, `ray <task>`), else `-`."""
    job_pid = process.get("job_pid")
    job = next((j for j in jobs if job_pid is not None and j.get("pid") == job_pid and j.get("node") == node), None)
    return f"job {job['job_id']}" if job else process.get("owner") or "-"


def _percent(used: float | None, total: float | None) -> float | None:
    return 100.0 * used / total if used is not None and total else None


def _unit(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:.0f}{unit}"


def _mib(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:.0f} MiB"


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
    from rich.live import Live

    with _keys() as key, Live(render(fetch()), console=console(), auto_refresh=False, screen=False,
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
