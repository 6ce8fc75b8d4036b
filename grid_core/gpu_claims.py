"""GPUs claimed per physical GPU, in locks that every cluster on a machine sees (DESIGN.md 6e).

Each Ray cluster believes it owns every GPU of its nodes, and Ray checks no one else's use
(ray#5528). So a job's runner claims the GPUs it runs on here before its command starts: one file
per physical GPU in CLAIMS (mode 1777, shared by every account), held with flock(2) for as long as
the job runs. The kernel drops a lock when its holder exits, however it exits, so a claim never
outlives its job. The file says who holds it (user, cluster, job), for the job that finds it taken.

A GPU's key is its UUID where NVML reads one, else the host's name and the GPU's index (GPUs a
config declares). A claim never blocks: a job whose GPUs are taken goes back to the queue.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from grid_core.types import GpuReading, NodeMetrics

# Kept across reboots of /tmp, and seen by every account. GRID_GPU_CLAIMS moves it, for a test's
# cluster on a machine whose real GPUs (and claims) are not the test's to take.
CLAIMS = os.environ.get("GRID_GPU_CLAIMS") or "/var/tmp/grid-gpu-claims"


@attrs.frozen
class Claim:
    """Who holds one GPU."""

    index: int
    user: str = ""  # whose job
    cluster: str = ""  # the cluster's name
    account: str = ""  # the account that runs that cluster
    job: str = ""

    def words(self, host: str) -> str:
        return f"GPU {self.index} of {host} is in use by {self.user or 'someone'}'s job {self.job or '?'} of " \
               f"cluster {self.cluster or '?'} (run by {self.account or '?'})"


def gpu_keys(count: int, found: Sequence[GpuReading] | None = None) -> list[str]:
    """Each GPU's key, by index: its UUID where the driver gives one (`found`: this machine's GPUs
    as already read; None: read them now, through the process's one NVML session), else host and
    index (no NVML, or a GPU the config declares)."""
    if found is None:
        from grid_core.builtin.nvml_metrics import READER

        found = READER.gpus()
    uuids = {g.index: g.uuid for g in found if g.uuid}
    host = socket.gethostname()
    return [uuids.get(i) or f"{host}-gpu{i}" for i in range(count)]


class Claims:
    """The GPUs one job holds on this machine, from `take` until `release` (or the process's end).

    Per GPU, each cluster that uses it holds a shared lock on a file of its own (`KEY.CLUSTER`):
    jobs of one cluster may share a GPU (fractions of one, which the engine hands out), jobs of two
    clusters may not. A short exclusive lock on `KEY.gate` makes looking for another cluster's
    lock and taking one's own a single step."""

    def __init__(self, directory: str = CLAIMS) -> None:
        self.directory = directory
        self.held: list[int] = []  # the file descriptors holding the locks
        self.indices: list[int] = []

    def _open(self, name: str) -> int:
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.directory, 0o1777)
            os.chmod(self.directory, 0o1777)  # whatever the umask: every account's clusters claim here
        fd = os.open(os.path.join(self.directory, name), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        with contextlib.suppress(OSError):  # only its maker may; one made 0666 stays so
            os.fchmod(fd, 0o666)
        return fd

    def take(self, indices: Sequence[int], holder: dict[str, str]) -> list[Claim]:
        """Claim these GPUs of this machine (the ones the engine assigned the job) for the holder's
        cluster (`holder["cluster"]`, `holder["account"]`). Returns [] once all are claimed; else
        the claims of other clusters that stood in the way, and nothing stays claimed."""
        keys = gpu_keys(max(indices, default=-1) + 1)
        me = _name(holder.get("account", ""), holder.get("cluster", ""))
        stood: list[Claim] = []
        for index in indices:
            gate = self._open(f"{_safe(keys[index])}.gate")
            try:
                fcntl.flock(gate, fcntl.LOCK_EX)  # held for the look and the take, microseconds
                others = [c for c in _held(self.directory, keys[index], index) if _name(c.account, c.cluster) != me]
                if others:
                    stood += others
                    continue
                fd = self._open(f"{_safe(keys[index])}.{me}")
                fcntl.flock(fd, fcntl.LOCK_SH)  # never waits: only shared locks are taken on it
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(holder).encode(), 0)
                self.held.append(fd)
                self.indices.append(index)
            finally:
                os.close(gate)
        if stood:
            self.release()
        return stood

    def release(self) -> None:
        for fd in self.held:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing drops the lock
        self.held, self.indices = [], []


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _name(account: str, cluster: str) -> str:
    return _safe(f"{account}~{cluster}")


def _locked() -> set[str]:
    """`dev:inode` of every file a flock is held on now (/proc/locks): testing a lock by taking one
    could make another job's claim fail at that moment."""
    try:
        with open("/proc/locks") as f:
            return {line.split()[5] for line in f if " FLOCK " in line and len(line.split()) > 5}
    except OSError:
        return set()


def _held(directory: str, key: str, index: int) -> list[Claim]:
    """Who holds the GPU `key` now: a claim for each cluster's file that a lock is held on."""
    locked, found = _locked(), []
    try:
        names = [n for n in os.listdir(directory) if n.startswith(f"{_safe(key)}.") and not n.endswith(".gate")]
    except OSError:
        return []
    for name in names:
        try:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}" in locked:
                found.append(_holder(fd, index))
        finally:
            os.close(fd)
    return found


def _holder(fd: int, index: int) -> Claim:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    return Claim(index=index, **{k: str(data.get(k, "")) for k in ("user", "cluster", "account", "job")})


def claimed_by_others(count: int, cluster: str, account: str, directory: str = CLAIMS,
                      found: Sequence[GpuReading] | None = None) -> list[Claim]:
    """The machine's GPUs that jobs of another cluster hold now (for `cluster status`); `found`
    as for gpu_keys."""
    me = _name(account, cluster)
    return [c for index, key in enumerate(gpu_keys(count, found)) for c in _held(directory, key, index)
            if _name(c.account, c.cluster) != me]


def with_claims(reading: NodeMetrics, cluster: str, gpus: int | None) -> NodeMetrics:
    """A node's reading, taken on the node, with the GPUs other clusters hold there: `gpus` is how
    many the config gives it, else those the reading found."""
    import pwd

    count = gpus if gpus is not None else len(reading.gpus)
    if not count or not os.path.isdir(CLAIMS):
        return reading
    host = socket.gethostname()
    held = claimed_by_others(count, cluster, pwd.getpwuid(os.getuid()).pw_name, found=reading.gpus)
    return attrs.evolve(reading, gpu_claims=tuple(c.words(host) for c in held))
