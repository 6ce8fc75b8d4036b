"""`grid offload watch`: a live dashboard drawn from the controller's status.

`render(status, jobs)` is a pure function of the records the backend returns (a ControllerStatus
and the JobRecords), so the screen can be drawn and checked without a terminal;
`run(fetch, interval)` redraws it in place until `q` or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from rich.console import Group, RenderableType
from rich.text import Text

from grid_core.cli.output import clock, console, join, styled, table
from grid_core.types import ControllerStatus, GpuProcess, JobRecord, NodeState

BAR = 20
DEFAULT_HIGH = {"cpu": 80.0, "memory": 70.0, "gpu": 90.0}  # until the controller says otherwise
DEFAULT_LOW = {"cpu": 60.0, "memory": 55.0, "gpu": 70.0}


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


QUEUE_SHOWN = 5  # the first waiting jobs shown


def render(status: ControllerStatus | None, jobs: Sequence[JobRecord] = ()) -> RenderableType:
    """The whole screen for one status snapshot (None: the controller said nothing yet)."""
    status = status or ControllerStatus(cluster="?")
    high, low = {**DEFAULT_HIGH, **status.thresholds}, {**DEFAULT_LOW, **status.low}
    marks = "  ".join(f"{m} {high[m]:.0f}%/{low[m]:.0f}%" for m in ("cpu", "memory", "gpu"))
    header = join(("grid offload", "bold"), f"  cluster {status.cluster}  ",
                  ("auto on", "green") if status.enabled else ("auto off", "dim"),
                  f"  policy {status.policy}  marks high/low: {marks}  every {status.interval_seconds:g} s")
    from grid_core.gpus import summary

    nodes = table(("node", "role", "gpus", "cpu", "owner/cluster cpu", "memory", "gpu", "owner gpu", "idle",
                   "state"), (
        (node.name, node.role, summary(node.gpu_models) if node.gpu_models else "-",
         bar(node.cpu_percent, high["cpu"], low["cpu"]),
         "-" if node.owner_cpu_percent is None or node.cluster_cpu_percent is None
         else f"{node.owner_cpu_percent:.0f}% / {node.cluster_cpu_percent:.0f}%",
         bar(node.memory_percent, high["memory"], low["memory"]),
         bar(node.gpu_percent, high["gpu"], low["gpu"]),
         "-" if node.owner_gpu_percent is None else f"{node.owner_gpu_percent:.0f}%",
         "-" if node.owner_idle_seconds is None else f"{node.owner_idle_seconds:.0f} s",
         state_cell(node))
        for node in status.nodes))
    parts: list[RenderableType] = [header, nodes]
    running = [j for j in jobs if j.state == "running"]
    gpus = [(node.name, gpu) for node in status.nodes for gpu in node.gpus]
    gpu_marks = (high["gpu"], low["gpu"])
    if gpus:
        parts.append(table(("node", "gpu", "use", "memory", "temp", "power", "processes (pid, memory, holder)"), (
            (name, f"{gpu.index} {gpu.name}", bar(gpu.util_percent, *gpu_marks),
             bar(_percent(gpu.memory_used_bytes, gpu.memory_total_bytes), *gpu_marks),
             _unit(gpu.temperature_c, "°C"), _unit(gpu.power_watts, " W"),
             "; ".join(f"{p.pid} {_mib(p.memory_used_bytes)} {gpu_holder(p, name, running)}"
                       for p in gpu.processes) or "-")
            for name, gpu in gpus), title="gpus"))
    claims = [(node.name, claim) for node in status.nodes for claim in node.gpu_claims]
    if claims:
        parts.append(table(("node", "held by another cluster"), claims, title="gpus of other clusters"))
    boosts = [b for b in status.boosts if b.state == "active"]
    if boosts:
        parts.append(table(("id", "target", "source", "amount", "priority", "expires", "user"), (
            (b.id, b.target, b.source, f"{b.amount:g} {b.resource}", b.priority, clock(b.expires_at), b.user or "-")
            for b in boosts), title="boosts"))
    work = [(node.name, w) for node in status.nodes for w in node.work]
    if work:
        parts.append(table(("node", "pid", "kind", "name", "step", "why"), (
            (name, str(w.pid), w.kind, w.name, w.action, w.reason) for name, w in work), title="work on held nodes"))
    if running:
        parts.append(table(("job", "node", "command"), (
            (j.id, j.node, " ".join(j.argv)[:60]) for j in running), title="running jobs"))
    waiting = sorted((j for j in jobs if j.state == "queued"), key=lambda j: (j.position or 1 << 30, j.seq))
    if waiting:
        parts.append(table(("#", "job", "why", "command"), (
            (str(j.position or "-"), j.id, j.reason or j.waiting or "", " ".join(j.argv)[:60])
            for j in waiting[:QUEUE_SHOWN]), title=f"queue: {len(waiting)} waiting"))
    events = status.events[-6:]
    if events:
        parts.append(table(("time", "event", "node", "why", "by"), (
            (clock(e.time), e.kind, e.node or "", e.reason, e.user) for e in events), title="last events"))
    parts.append(Text("q or Ctrl-C to quit", style="dim"))
    return Group(*parts)


def state_cell(node: NodeState) -> Text:
    """free; held (why); lowered N or evicting N (why): the step the node is at."""
    if node.hold is None:
        return styled("free", "green")
    step = f"{node.step} {node.lowered}" if node.step in ("lowered", "evicting") else "held"
    return join((step, "red"), f" ({node.hold})")


def gpu_holder(process: GpuProcess, node: str, jobs: Sequence[JobRecord]) -> str:
    """Who holds a GPU process: `job <id>` when its job's recorded pid on that node matches, else the
    owner its node saw (`grid job`, `ray <task>`), else `-`."""
    job_pid = process.job_pid
    job = next((j for j in jobs if job_pid is not None and j.pid == job_pid and j.node == node), None)
    return f"job {job.id}" if job else process.owner or "-"


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


def run(fetch: Callable[[], tuple[ControllerStatus, Sequence[JobRecord]]], interval: float) -> None:
    """Redraw in place every `interval` seconds until q or Ctrl-C; `fetch()` gives the status and jobs."""
    from rich.live import Live

    with _keys() as key, Live(render(*fetch()), console=console(), auto_refresh=False, screen=False,
                             transient=False) as live:
        try:
            while True:
                deadline = time.monotonic() + interval
                while time.monotonic() < deadline:
                    if key() in ("q", "Q"):
                        return
                    time.sleep(0.05)
                live.update(render(*fetch()), refresh=True)
        except KeyboardInterrupt:
            return
