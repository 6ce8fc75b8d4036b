"""`grid run` and `grid jobs ...`: commands run as jobs on the cluster, through the backend."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import click

from grid_core.cli import completion
from grid_core.cli.context import (
    FiniteFloat,
    ask_backend,
    config_option,
    json_option,
    keep_shortcut,
    print_json,
    print_json_text,
    shortcut_client,
    state,
    tried,
)
from grid_core.cli.output import Pieces, clock, print_table
from grid_core.errors import GridError

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.types import Backend, JobDefaults, JobListing, JobRecord, JobSpec, JobsText

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


def word_option(parser: str) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A click callback that reads the option with the queue's parser of that name
    (grid_core.queue.words, imported only when the option is given)."""

    def read(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        from grid_core.queue import words

        try:
            return getattr(words, parser)(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return read


@click.command("run")
@click.option("--node", "-n", default=None, metavar="NAME",
              shell_complete=completion.nodes,
              help="Run on this node, waiting for it if busy (default: the scheduler picks).")
@click.option("--cpus", type=FiniteFloat(min=0), default=1.0, show_default=True, help="CPUs the job holds.")
@click.option("--gpus", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="GPUs the job holds (0.5: half of one, shared; docs/gpus.md).")
@click.option("--gpu-type", "gpu_types", multiple=True, metavar="MODELS", callback=gpu_types_option,
              help="Only GPUs of these models, e.g. A100 or 4090,3090 (whole words, any case).")
@click.option("--gpu-memory", "gpu_memory", default=None, metavar="SIZE", callback=size_option,
              help="Only GPUs with at least this much memory in all, e.g. 20G.")
@click.option("--memory", "memory_bytes", default=None, metavar="SIZE", callback=size_option,
              help="Memory the job holds, e.g. 2G.")
@click.option("--priority", "-p", default="normal", metavar="LEVEL", callback=word_option("parse_priority"),
              help="low, normal, high or an integer: the queue runs higher first, then in submission order.")
@click.option("--array", "-a", default=None, metavar="INDICES", callback=word_option("parse_array"),
              help="One job per index, e.g. 0-99%8 (at most 8 at once), 1,5,9 or 0-98:2; always detached.")
@click.option("--after", default=None, metavar="ID[,ID...]", callback=word_option("parse_after"),
              help="Start once these jobs succeed; if one does not, this job is cancelled.")
@click.option("--time", "-t", "time_limit", default=None, metavar="DURATION", callback=word_option("parse_duration"),
              help="Stop the job past this, e.g. 90s, 30m, 2h; it ends as timeout "
                   "(default: execution.timeout_seconds).")
@click.option("--hold", is_flag=True, help="Queue the job held: it starts after grid jobs release ID.")
@click.option("--retries", type=click.IntRange(0, 1000), default=None, metavar="N",
              help="Run the job again elsewhere when its node is lost, up to N times (default 3). Its own "
                   "exit status is its result, never retried here: execution.retry_attempts does that.")
@click.option("--no-requeue", is_flag=True, help="Never run the job again after its node is lost: it ends as lost.")
@click.option("--detach", "-d", is_flag=True, help="Print the job id and return; the job keeps running.")
@config_option
@click.argument("argv", nargs=-1, required=True)
def run(node: str | None, cpus: float, gpus: float, gpu_types: tuple[str, ...], gpu_memory: int, memory_bytes: int,
        priority: int, array: tuple[tuple[int, ...], int] | None, after: tuple[str, ...] | None,
        time_limit: float | None, hold: bool, retries: int | None, no_requeue: bool, detach: bool,
        argv: tuple[str, ...]) -> None:
    """Run ARGV as a job on the cluster; its output streams back and its exit status is grid's.

    A job that no node has room for now waits in the queue (stderr says why, and its place in
    line) and starts when room frees; one that no node could ever hold is refused.
    Arguments arrive literally; for pipes or variables run a shell: grid run -- sh -c 'nproc; hostname'.
    Ctrl-C stops the job, or takes it out of the queue (unless --detach). A lost connection does
    not: grid reconnects and the output resumes where it stopped; if it cannot, the job runs on
    as if detached. A job whose node is lost runs again elsewhere, as its next attempt (--retries).
    """
    gpu_kind_check(gpus, gpu_types, gpu_memory)
    if no_requeue and retries is not None:
        raise click.UsageError("--retries and --no-requeue contradict each other: give one of them")
    asked: dict[str, Any] = {
        "argv": argv, "node": node, "cpus": cpus, "gpus": gpus, "gpu_types": gpu_types, "gpu_memory": gpu_memory,
        "memory_bytes": memory_bytes, "priority": priority, "array": array, "after": after, "time_limit": time_limit,
        "hold": hold, "retries": retries, "no_requeue": no_requeue,
        "job_id": os.urandom(4).hex()}  # secrets.token_hex's bytes, without its 7 ms import
    if (detach or array) and _by_shortcut(asked):
        _say_detached(asked["job_id"], bool(array))
        return
    from grid_core.backends import load_backend
    from grid_core.types import JobDefaults

    with state().cluster() as c:
        backend = load_backend(c.config)
        if node:
            c.config.node(node)  # a name the config has, or its error
        # Without --node, the queue puts the job first into a boost lent to the head with room for it.
        spec = job_spec(JobDefaults.of(c.config), **asked)
        if detach or array:
            job_id, status = backend.submit(c, spec, detach=True, on_output=_write)
            keep_shortcut(c, backend)
        else:
            job_id, status = _attached(c, backend, spec)
    if detach or array:
        _say_detached(job_id, bool(array))
        return
    if status:
        raise SystemExit(status)


def job_spec(defaults: JobDefaults, *, argv: tuple[str, ...], node: str | None, cpus: float, gpus: float,
             gpu_types: tuple[str, ...], gpu_memory: int, memory_bytes: int, priority: int,
             array: tuple[tuple[int, ...], int] | None, after: tuple[str, ...] | None, time_limit: float | None,
             hold: bool, retries: int | None, no_requeue: bool, job_id: str) -> JobSpec:
    """The job `grid run` asks for: its options, and the config's defaults where they say nothing."""
    from grid_core.types import REQUEUES, JobSpec

    here = [defaults.local[node]] if node else defaults.local.values()  # where it may run: this machine?
    cwd = defaults.working_directory or (os.getcwd() if all(here) else None)
    return JobSpec(argv=argv, node=node, cpus=cpus, gpus=gpus, memory_bytes=memory_bytes, gpu_types=gpu_types,
                   gpu_memory_bytes=gpu_memory, cwd=cwd, env=dict(defaults.environment), job_id=job_id,
                   timeout_seconds=time_limit or defaults.timeout_seconds, retries=defaults.retries,
                   requeues=0 if no_requeue else REQUEUES if retries is None else retries,
                   priority=priority, after=after or (), array=array[0] if array else (),
                   array_cap=array[1] if array else 0, held=hold)


def _by_shortcut(asked: dict[str, Any]) -> bool:
    """Queue a detached job by the kept shortcut; False: take the usual path."""
    found = shortcut_client()
    if found is None or (asked["node"] is not None and asked["node"] not in found[1].defaults.local):
        return False
    client, kept = found
    return tried(lambda: client.submit(job_spec(kept.defaults, **asked)))[0]


def _say_detached(job_id: str, array: bool) -> None:
    click.echo(job_id)
    click.echo(f"follow it: grid jobs logs {job_id}{'.0' if array else ''} --follow", err=True)


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
        info = job_records(backend.stop_job(c, job_id))[0]
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


QUEUE_SHOWN = 20  # waiting jobs shown one by one; the rest are one row (--expand shows them)
COLOURS = {"running": "cyan", "queued": "yellow", "succeeded": "green", "failed": "red", "stopped": "magenta",
           "timeout": "red", "lost": "red"}


@jobs.command("list")
@click.option("--all", "everything", is_flag=True, help="Every finished job kept, not only the last day's.")
@click.option("--expand", is_flag=True, help="Every job one by one: an array's, not one row with counts; every waiting "
              f"job, not the first {QUEUE_SHOWN}.")
@click.option("--user", "user", metavar="NAME", help="Only this user's jobs.")
@click.option("--mine", is_flag=True, help="Only your own jobs (as the head sees you).")
@json_option
@config_option
def list_jobs(everything: bool, expand: bool, user: str | None, mine: bool, as_json: bool) -> None:
    """Everyone's active jobs and recent finished ones, in submission order; a waiting job says why."""
    if user is not None and mine:
        raise click.UsageError("give --user NAME or --mine, not both")
    if as_json:
        _print_jobs_json(ask_backend("jobs_text", everything=everything, user=user, mine=mine))
        return
    from grid_core.types import JobListing, wire

    answer = ask_backend("listing", shown=QUEUE_SHOWN, expand=expand, everything=everything, user=user, mine=mine)
    print_table(("id", "state", "why / exit", "node", "user", "submitted", "started", "ended", "command"),
                _rows(wire().structure(answer, JobListing)))


def _print_jobs_json(sent: JobsText) -> None:
    """The records as the service wrote them where they have JobRecord's keys and no others (into a
    pipe as they came; a terminal's indented); else made anew (some kept by an older grid)."""
    import json

    import attrs

    from grid_core.types import JobRecord

    if tuple(sent.fields) != tuple(f.name for f in attrs.fields(JobRecord)):
        print_json(job_records(json.loads(sent.text)))
    else:
        print_json_text(sent.text)


def _rows(shown: JobListing) -> Iterable[tuple[Any, ...]]:
    """A row per job, and per array (counts by state), in submission order; then the waiting jobs
    left out, as one row."""
    rows: list[tuple[int, tuple[Any, ...]]] = []
    for row in shown.arrays:
        job = row.first
        states = ", ".join(f"{n} {s}" for s, n in row.states.items())
        cap = f", at most {job.array_cap} at once" if job.array_cap else ""
        rows.append((job.seq, (job.array_id, f"array of {row.size}", states + cap, None, job.user,
                               clock(job.submitted), clock(row.started), clock(row.ended), " ".join(job.argv))))
    for job in shown.jobs:
        why = f"{job.waiting} (#{job.position})" if job.state == "queued" and job.waiting else \
            None if job.exit_status is None else str(job.exit_status)
        number = len(job.attempts) + (job.state == "queued")  # the attempt running, ran last, or next
        if number > 1:  # it runs again after a lost attempt
            why = f"{why}, attempt {number}" if why else f"attempt {number}"
        rows.append((job.seq, (job.id, Pieces((job.state, COLOURS.get(job.state, "white"))), why, job.node, job.user,
                               clock(job.submitted), clock(job.started), clock(job.ended), " ".join(job.argv))))
    yield from (row for _, row in sorted(rows, key=lambda r: r[0]))
    if shown.more_queued:
        yield ("...", Pieces((f"{shown.more_queued} more queued", "yellow")), "--expand shows them", None, None, None,
               None, None, None)


@jobs.command("usage")
@json_option
@config_option
def usage(as_json: bool) -> None:
    """Each user's recent use of the cluster and their share of it, beside the share they are due
    (the `fair-share` scheduler runs the jobs of whoever is furthest below it first)."""
    from grid_core.backends import load_backend
    from grid_core.types import UserUsage, wire

    with state().cluster() as c:
        found = [wire().structure(u, UserUsage) for u in load_backend(c.config).usage(c)]
    if as_json:
        print_json(found)
        return
    rows = [(u.user, f"{u.cpu_seconds / 3600:.2f}", f"{u.gpu_seconds / 3600:.2f}", f"{u.share:.0%}",
             f"{u.target:.0%}", f"{u.running} ({u.cpus:g} CPU, {u.gpus:g} GPU)", str(u.queued)) for u in found]
    print_table(("user", "CPU-hours", "GPU-hours", "share", "target", "running", "queued"), rows)


def job_records(found: Iterable[Any]) -> list[JobRecord]:
    """What the backend lists as jobs, as records."""
    from grid_core.types import JobRecord, wire

    return [j if isinstance(j, JobRecord) else wire().structure(j, JobRecord) for j in found]


@jobs.command()
@click.option("--follow", "-f", is_flag=True, help="Keep following until the job ends; exit with its status.")
@click.option("--attempt", type=click.IntRange(1), default=None, metavar="N",
              help="The output of attempt N (1 first) of a job that ran again after its node was lost.")
@config_option
@click.argument("job_id", shell_complete=completion.job_ids)
def logs(follow: bool, attempt: int | None, job_id: str) -> None:
    """A job's output (what is kept of it: the last 8 MiB); an array's job is ID.INDEX. Of a job
    that ran again after its node was lost, the attempt that counts: the last."""
    from grid_core.backends import load_backend

    with state().cluster() as c:
        status = load_backend(c.config).logs(c, job_id, follow=follow, on_output=_write, attempt=attempt)
    if follow and status:
        raise SystemExit(status)


@jobs.command("stop")
@config_option
@click.argument("job_id", shell_complete=completion.job_ids)
def stop_job(job_id: str) -> None:
    """Stop a job: a waiting one never starts; a running one gets SIGTERM to its whole process
    group, SIGKILL after 5 s. An array's id stops every job of it; ID.INDEX one of them."""
    from grid_core.backends import load_backend

    with state().cluster() as c:
        found = job_records(load_backend(c.config).stop_job(c, job_id))
    for info in found:
        ended = "" if info.exit_status is None else f" (exit status {info.exit_status})"
        click.echo(f"job {info.id}: {info.state}{ended}")


@jobs.command("hold")
@config_option
@click.argument("job_id", shell_complete=completion.job_ids)
def hold_job(job_id: str) -> None:
    """Keep a waiting job (or an array's waiting jobs) from starting, until grid jobs release."""
    _hold(job_id, held=True)


@jobs.command("release")
@config_option
@click.argument("job_id", shell_complete=completion.job_ids)
def release_job(job_id: str) -> None:
    """Let a held job start again in its place in the queue."""
    _hold(job_id, held=False)


def _hold(job_id: str, held: bool) -> None:
    from grid_core.backends import load_backend

    with state().cluster() as c:
        found = job_records(load_backend(c.config).hold_job(c, job_id, held=held))
    click.echo(f"{'held' if held else 'released'} {len(found)} waiting job{'s' * (len(found) != 1)}: "
               f"{', '.join(j.id for j in found)}")
