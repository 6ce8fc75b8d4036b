"""Fair share and per-user limits: the lab's rules for whose job goes first, without an engine.

- Use is CPU-seconds and GPU-seconds, each second counted less as it ages: one used
  `scheduler.half_life_days` ago counts half (Slurm's PriorityDecayHalfLife). A running job counts
  what it has used so far.
- A user's share is their part of everyone's recent use, by the resource they used most of
  (dominant resource fairness, as Mesos and YARN weigh CPUs against GPUs). Each user who has used
  the cluster lately or waits now is due an equal part: the target.
- `fair_order` puts the waiting jobs of the user furthest below their target first, then by
  priority, then in submission order. The queue's other rules (reservations, holds) stay the same.
- `[access.limits]` caps what one user's running jobs hold at once; a job past it waits, `limit`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from grid_core.config.models import UserLimits
from grid_core.types.jobs import JobRecord, UserUsage


def spent(job: JobRecord, now: float) -> tuple[float, float, float]:
    """(CPU-seconds, GPU-seconds, when) the job used: every attempt's run, a running one until now."""
    runs = [(a.started, a.ended) for a in job.attempts if a.started is not None] or \
        ([(job.started, job.ended)] if job.started is not None else [])
    seconds = sum(max(0.0, (end if end is not None else now) - start) for start, end in runs if start is not None)
    when = max((end if end is not None else now for _, end in runs), default=now)
    return job.cpus * seconds, job.gpus * seconds, when


class Ledger:
    """Each user's decayed use of finished jobs, kept as they end (a restart reads them again).

    A use is kept scaled to a fixed epoch, 2^((when - epoch) / half-life), so adding one is a sum
    and reading all of them at `now` is one factor."""

    def __init__(self, half_life_days: float, epoch: float) -> None:
        self.half_life = half_life_days * 86400.0
        self.epoch = epoch
        self.kept: dict[str, list[float]] = {}  # user -> [CPU, GPU], scaled to the epoch
        self.counted: dict[str, float] = {}  # finished job -> when it ended: each is added once

    def add(self, job: JobRecord) -> None:
        if job.id in self.counted or job.state in ("queued", "running"):
            return
        self.counted[job.id] = job.ended or 0.0
        cpu, gpu, when = spent(job, job.ended or self.epoch)
        scale = math.pow(2.0, max(-1000.0, min(1000.0, (when - self.epoch) / self.half_life)))
        mine = self.kept.setdefault(job.user, [0.0, 0.0])
        mine[0] += cpu * scale
        mine[1] += gpu * scale

    def forget_before(self, since: float | None) -> None:
        """Let go of the ids of jobs that ended before `since`: a later read never returns them."""
        if since is not None:
            self.counted = {job: ended for job, ended in self.counted.items() if ended >= since}

    def used(self, now: float) -> dict[str, tuple[float, float]]:
        """Each user's decayed (CPU-seconds, GPU-seconds) of finished jobs, as of `now`."""
        factor = math.pow(2.0, max(-1000.0, min(1000.0, -(now - self.epoch) / self.half_life)))
        return {user: (cpu * factor, gpu * factor) for user, (cpu, gpu) in self.kept.items()}


def standing(finished: Mapping[str, tuple[float, float]], active: Iterable[JobRecord], now: float) -> list[UserUsage]:
    """Each user's usage record: the finished jobs' decayed use, plus the running jobs' so far."""
    use = {user: list(pair) for user, pair in finished.items()}
    counts: dict[str, list[float]] = {}  # user -> [running, queued, cpus, gpus]
    for job in active:
        mine = counts.setdefault(job.user, [0, 0, 0.0, 0.0])
        if job.state == "running":
            cpu, gpu, _ = spent(job, now)
            total = use.setdefault(job.user, [0.0, 0.0])
            total[0] += cpu
            total[1] += gpu
            mine[0] += 1
            mine[2] += job.cpus
            mine[3] += job.gpus
        elif job.state == "queued":
            mine[1] += 1
    users = sorted(set(use) | set(counts))
    sums = [sum(use.get(u, [0.0, 0.0])[i] for u in users) for i in (0, 1)]
    target = 1.0 / len(users) if users else 0.0
    out = []
    for user in users:
        cpu, gpu = use.get(user, [0.0, 0.0])
        share = max(cpu / sums[0] if sums[0] else 0.0, gpu / sums[1] if sums[1] else 0.0)
        running, queued, cpus, gpus = counts.get(user, [0, 0, 0.0, 0.0])
        out.append(UserUsage(user=user, cpu_seconds=cpu, gpu_seconds=gpu, share=share, target=target,
                             running=int(running), queued=int(queued), cpus=cpus, gpus=gpus))
    return out


def fair_order(jobs: Sequence[JobRecord], usage: Mapping[str, UserUsage]) -> list[JobRecord]:
    """The user furthest below their target first (their share over it, lowest first), then
    priority, then submission. A user the usage does not know has used nothing."""
    def standing_of(user: str) -> float:
        found = usage.get(user)
        return found.share / found.target if found is not None and found.target else 0.0

    return sorted(jobs, key=lambda j: (standing_of(j.user), -j.priority, j.seq))


def past_limit(job: JobRecord, holding: Mapping[str, tuple[float, float]], limits: UserLimits) -> str | None:
    """Why the job must wait for its user's limit (`holding`: user -> CPUs, GPUs their running
    jobs hold); None when it may start."""
    cpus, gpus = holding.get(job.user, (0.0, 0.0))
    if limits.cpus is not None and job.cpus and cpus + job.cpus > limits.cpus + 1e-9:
        return f"{job.user or 'its user'}'s jobs hold {cpus:g} of at most {limits.cpus:g} CPUs at once " \
               "([access.limits] cpus)"
    if limits.gpus is not None and job.gpus and gpus + job.gpus > limits.gpus + 1e-9:
        return f"{job.user or 'its user'}'s jobs hold {gpus:g} of at most {limits.gpus:g} GPUs at once " \
               "([access.limits] gpus)"
    return None
