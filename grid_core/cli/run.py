"""`grid run` and `grid jobs ...`: commands run as jobs on the cluster, through the backend."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from grid_core.cli import completion
from grid_core.cli.context import FiniteFloat, config_option, json_option, print_json, state
from grid_core.cli.output import clock, console, styled, table
from grid_core.errors import GridError

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.types import Backend, JobRecord, JobSpec, WorkRequest

UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
MAX_SIZE = 2**60  # 1 EiB: more is a typo, and Ray's resource amounts overflow long before
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def size_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int:
    """--memory as bytes (0 without one), checked while the options are parsed, so errors name it."""
    return parse_size(value) if value is not None else 0


def parse_size(text: str) -> int:
    """Bytes from `2G`, `512MiB`, `1.5gb` or a plain number of bytes (binary units)."""
    match = SIZE.match(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a size such as 512M or 2G")
    size = float(match.group(1)) * UNITS[match.group(2).lower()]
    if size > MAX_SIZE:
        raise click.BadParameter(f"{text!r} is more than 1 EiB")
    return int(size)


def gpu_types_option(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """--gpu-type as the models named, one option or a comma-separated list of them."""
    types = tuple(t.strip() for v in value for t in v.split(","))
    if any(not re.search(r"[A-Za-z0-9]", t) for t in types):
        raise click.BadParameter(f"{','.join(value)!r} has an empty model name; give models such as A100 or 4090,3090")
    return types


def gpu_kind_check(gpus: float, gpu_types: tuple[str, ...], gpu_memory: int) -> None:
    """--gpu-type and --gpu-memory say which GPUs; they need --gpus, which says how many."""
    if (gpu_types or gpu_memory) and not gpus:
        raise click.UsageError("--gpu-type and --gpu-memory need --gpus (how many GPUs the job holds)")


def _write(stream: str, text: str) -> None:
    out = sys.stdout if stream == "stdout" else sys.stderr
    out.write(text)
    out.flush()


def choose_node(c: Cluster, backend: Backend, request: WorkRequest, wanted: str | None,
                avoid: tuple[str, ...] = ()) -> str:
    """The named node if it can take the request, else the configured scheduler's choice (`place`)."""
    return place(c, backend, request, wanted, avoid)[0]


def place(c: Cluster, backend: Backend, request: WorkRequest, wanted: str | None,
          avoid: tuple[str, ...] = ()) -> tuple[str, dict[str, float]]:
    """The named node if it can ever take the request (a wait for its free capacity is said on
    stderr), else the configured scheduler's choice among
    alive nodes (less `avoid`) that have the GPUs it names, from live metrics and the engine's
    available resources; and the engine resources that hold the job to those GPUs (gpus.py). A
    held node has its free CPUs reserved, so it does not fit while others do."""
    from grid_core import gpus, plugins
    from grid_core.types import NodeView, ResourceUse

    engine = backend.status(c)
    alive = [n for n in c.config.nodes if n.name in engine and engine[n.name].alive]
    if not alive:
        reason = next((v.error for v in engine.values() if v.error), None)
        raise GridError(f"cluster {c.config.name!r} is not running: {reason or 'start it with grid cluster start'}")

    def lacking(name: str, now: bool = False) -> tuple[str, float, ResourceUse] | None:
        """The first resource the node lacks for the request: in all, or free at this moment."""
        for key, asked in (("CPU", request.cpus), ("GPU", request.gpus), ("memory", request.memory_bytes)):
            use = engine[name].resources.get(key, ResourceUse(total=0.0, available=0.0, used=0.0))
            if asked > (use.available if now else use.total):
                return key, asked, use
        return None

    def fits_total(name: str) -> str | None:
        if (found := lacking(name)) is None:
            return None
        key, asked, use = found
        return f"node {name} has {use.total:g} {key} in all, the job asks for {asked:g}"

    # A request for a kind of GPU is checked against every running node's GPUs first: one nothing
    # can ever satisfy fails at once, naming what the cluster has.
    kinds = gpus.asks_kind(request)
    sampled = alive if kinds else [n for n in alive if n.name not in avoid] if wanted is None else []
    metrics = {name: out.value if out.error is None else None
               for name, out in (c.sample(sampled) if sampled else {}).items()}
    found = {n.name: gpus.read_or_declared(n, metrics.get(n.name))[0] for n in alive}

    def resources(name: str) -> dict[str, float]:
        return gpus.job_resources(request, found[name], engine[name].resources) if kinds else {}

    if kinds and (problem := gpus.shortfall(request, found)):
        raise GridError(problem)
    if wanted is not None:
        c.config.node(wanted)  # an unknown name is a config error naming the nodes
        if wanted not in {n.name for n in alive}:
            raise GridError(f"node {wanted} is not running in cluster {c.config.name!r}")
        if problem := fits_total(wanted):
            raise GridError(problem)
        if busy := lacking(wanted, now=True):  # a named node is waited for, not refused: say so, or it looks hung
            key, _, use = busy
            free = f"{use.available / 2**30:.1f} of {use.total / 2**30:.1f} GiB memory" if key == "memory" else \
                f"{use.available:g} of {use.total:g} {key}"
            click.echo(f"grid: {wanted} has {free} free now (in use, or lent by a boost or held); the job waits "
                       "until it is", err=True)
        if kinds and not gpus.satisfies(found[wanted], request):
            raise GridError(f"node {wanted} does not have {gpus.describe(request)}: it has "
                            f"{gpus.summary(found[wanted])}")
        return wanted, resources(wanted)
    alive = [n for n in alive if n.name not in avoid and (not kinds or gpus.satisfies(found[n.name], request))]
    if not alive:
        raise GridError(f"no other node is running in cluster {c.config.name!r}" if not kinds else
                        f"no node but {', '.join(avoid)} has {gpus.describe(request)}")
    views = []
    for node in alive:
        available = {k: v.available for k, v in engine[node.name].resources.items()}
        views.append(NodeView(name=node.name, role="head" if node.is_head else "worker",
                              metrics=metrics[node.name], available=available, tags=tuple(node.tags),
                              gpus=found[node.name]))
    scheduler = plugins.host().get("grid_schedulers", c.config.scheduler.name).factory()
    chosen = scheduler.choose(request, views)
    if chosen is None:
        reasons = "; ".join(filter(None, (fits_total(n.name) for n in alive))) or "all are busy"
        raise GridError(f"no node can take the job now: {reasons}")
    return chosen.name, resources(chosen.name)


@click.command("run")
@click.option("--node", "-n", default=None, metavar="NAME",
              shell_complete=completion.nodes, help="Run on this node (default: the scheduler picks).")
@click.option("--cpus", type=FiniteFloat(min=0), default=1.0, show_default=True, help="CPUs the job holds.")
@click.option("--gpus", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="GPUs the job holds (0.5: half of one, shared; docs/gpus.md).")
@click.option("--gpu-type", "gpu_types", multiple=True, metavar="MODELS", callback=gpu_types_option,
              help="Only GPUs of these models, e.g. A100 or 4090,3090 (whole words, any case).")
@click.option("--gpu-memory", "gpu_memory", default=None, metavar="SIZE", callback=size_option,
              help="Only GPUs with at least this much memory in all, e.g. 20G.")
@click.option("--memory", "memory_bytes", default=None, metavar="SIZE", callback=size_option,
              help="Memory the job holds, e.g. 2G.")
@click.option("--detach", "-d", is_flag=True, help="Print the job id and return; the job keeps running.")
@config_option
@click.argument("argv", nargs=-1, required=True)
def run(node: str | None, cpus: float, gpus: float, gpu_types: tuple[str, ...], gpu_memory: int, memory_bytes: int,
        detach: bool, argv: tuple[str, ...]) -> None:
    """Run ARGV as a job on the cluster; its output streams back and its exit status is grid's.

    Arguments arrive literally; for pipes or variables run a shell: grid run -- sh -c 'nproc; hostname'.
    Ctrl-C stops the job (unless --detach). A lost connection does not: grid reconnects and the
    output resumes where it stopped; if it cannot, the job runs on as if detached.
    """
    import secrets  # here, not at the top: `jobs list` need not import it

    from grid_core.backends import load_backend
    from grid_core.types import JobSpec, WorkRequest

    gpu_kind_check(gpus, gpu_types, gpu_memory)
    with state().cluster() as c:
        backend = load_backend(c.config)
        request = WorkRequest(cpus=cpus, gpus=gpus, memory_bytes=memory_bytes, origin=c.config.head.name,
                              gpu_types=gpu_types, gpu_memory_bytes=gpu_memory)
        # A boost lent to this node comes first (for a kind of GPU, one on a node that has that kind).
        boosted = None if node else backend.boost_for(c, request)
        if boosted and (gpu_types or gpu_memory):
            from grid_core.gpus import read_or_declared, satisfies

            lender = c.config.node(boosted[0])
            if not satisfies(read_or_declared(lender, c.sample([lender])[lender.name].value)[0], request):
                boosted = None
        target, resources = (boosted[0], {}) if boosted else place(c, backend, request, node)
        execution = c.config.execution
        cwd = execution.working_directory or (os.getcwd() if c.config.node(target).transport_name == "local" else None)
        spec = JobSpec(argv=argv, node=target, cpus=cpus, gpus=gpus, memory_bytes=memory_bytes, cwd=cwd,
                       env=dict(execution.environment), job_id=secrets.token_hex(4),
                       boost=boosted[1] if boosted else None, timeout_seconds=execution.timeout_seconds,
                       retries=execution.retry_attempts, resources=resources)
        if detach:
            job_id, status = backend.submit(c, spec, detach=True, on_output=_write)
        else:
            job_id, status = _attached(c, backend, spec)
    if detach:
        click.echo(job_id)
        click.echo(f"job {job_id} runs on {target}; follow it: grid jobs logs {job_id} --follow", err=True)
        return
    if status:
        raise SystemExit(status)


def _attached(c: Cluster, backend: Backend, spec: JobSpec) -> tuple[str, int | None]:
    """Run the job and follow it. Only Ctrl-C stops it, by asking the service to (a lost
    connection does not: the backend follows the job again); SIGTERM or SIGHUP to the CLI leave it
    running, and say how to follow it."""
    import signal

    job_id = str(spec.job_id)
    follow = f"grid jobs logs {job_id} --follow"

    def leave(signum: int, _frame: object) -> None:
        click.echo(f"grid: {signal.Signals(signum).name} ends this CLI; job {job_id} runs on; follow it: {follow}",
                   err=True)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, leave)
    try:
        return backend.submit(c, spec, detach=False, on_output=_write)
    except KeyboardInterrupt:
        click.echo(f"interrupted: stopping job {job_id} (Ctrl-C again leaves it running)", err=True)
        _stop_interrupted(c, backend, job_id, follow)
        raise SystemExit(130) from None


def _stop_interrupted(c: Cluster, backend: Backend, job_id: str, follow: str) -> None:
    """Ctrl-C's explicit stop, and what became of the job."""
    from grid_core.types import TransportError

    try:
        info = job_records([backend.stop_job(c, job_id)])[0]
    except KeyboardInterrupt:
        click.echo(f"job {job_id} was left running; follow it: {follow}", err=True)
    except (GridError, TransportError) as exc:
        click.echo(f"error: could not stop job {job_id} ({exc}); it may run on: grid jobs stop {job_id}", err=True)
    else:
        ended = "" if info.exit_status is None else f" (exit status {info.exit_status})"
        click.echo(f"job {job_id}: {info.state}{ended}", err=True)


@click.group()
def jobs() -> None:
    """List, follow and stop jobs."""


@jobs.command("list")
@json_option
@config_option
def list_jobs(as_json: bool) -> None:
    """Every job the cluster knows, oldest first."""
    from grid_core.backends import load_backend

    with state().cluster() as c:
        found = job_records(load_backend(c.config).jobs(c))
    if as_json:
        print_json(found)
        return
    colours = {"running": "cyan", "pending": "yellow", "succeeded": "green", "failed": "red", "stopped": "magenta"}
    console().print(table(("id", "node", "state", "exit", "submitted", "ended", "command"), (
        (job.id, job.node, styled(job.state, colours.get(job.state, "white")),
         None if job.exit_status is None else str(job.exit_status), clock(job.submitted),
         clock(job.ended), " ".join(job.argv)) for job in found)))


def job_records(found: Iterable[Any]) -> list[JobRecord]:
    """What the backend lists as jobs, as records."""
    from grid_core.types import JobRecord, wire

    return [j if isinstance(j, JobRecord) else wire().structure(j, JobRecord) for j in found]


@jobs.command()
@click.option("--follow", "-f", is_flag=True, help="Keep following until the job ends; exit with its status.")
@config_option
@click.argument("job_id", shell_complete=completion.job_ids)
def logs(follow: bool, job_id: str) -> None:
    """A job's output (what is kept of it: the last 8 MiB)."""
    from grid_core.backends import load_backend

    with state().cluster() as c:
        status = load_backend(c.config).logs(c, job_id, follow=follow, on_output=_write)
    if follow and status:
        raise SystemExit(status)


@jobs.command("stop")
@config_option
@click.argument("job_id", shell_complete=completion.job_ids)
def stop_job(job_id: str) -> None:
    """Stop a job: SIGTERM to its whole process group, SIGKILL after 5 s."""
    from grid_core.backends import load_backend

    with state().cluster() as c:
        info = job_records([load_backend(c.config).stop_job(c, job_id)])[0]
    ended = "" if info.exit_status is None else f" (exit status {info.exit_status})"
    click.echo(f"job {job_id}: {info.state}{ended}")
