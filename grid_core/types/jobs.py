"""A job: what `grid run` asks a backend to run, and the record the cluster keeps of it."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from grid_core.record import record

__all__ = ("JobRecord", "JobSpec")


@record
class JobSpec:
    """A command to run as a job on one node, with the resources it holds while it runs."""

    argv: tuple[str, ...]
    node: str
    cpus: float = 1.0
    gpus: float = 0.0
    memory_bytes: int = 0
    cwd: str | None = None  # None: the node's home directory
    env: Mapping[str, str] = attrs.field(factory=dict)
    job_id: str | None = None  # None: the backend makes one
    boost: str | None = None  # run inside this boost's reservation on `node`
    timeout_seconds: float | None = None  # then the job is stopped and fails with exit status 124
    retries: int = 0  # runs again after a failure, up to this many times
    # Engine resources the job asks for beside its CPUs, GPUs and memory (a GPU's model, its memory class).
    resources: Mapping[str, float] = attrs.field(factory=dict)


@record(kw_only=True)
class JobRecord:
    """A job the cluster knows: where and what it runs, its state, exit status and times."""

    id: str
    node: str
    argv: tuple[str, ...]
    state: str  # pending, running, succeeded, failed, stopped
    submitted: float
    cwd: str | None = None
    exit_status: int | None = None
    started: float | None = None
    ended: float | None = None
    pid: int | None = None
    hostname: str | None = None
    cpus: float = 0.0
    gpus: float = 0.0
    memory_bytes: int = 0
    boost: str | None = None  # the boost reservation it runs in, if any
    reason: str | None = None  # why it failed or ended, where grid knows
