"""Slurm as the peer of grid's job queue: a private one-node Slurm, measured as users run it.

What it measures (TESTBED.md section 5), each on an empty queue:
- `submit_seconds`: median wall time of one `sbatch --wrap true` call;
- `throughput`: jobs/s for n trivial jobs submitted back to back, from the first submit until the queue is empty;
- `start_latency`: median seconds from a CPU freeing to an already queued job starting (both moments are written by
  the jobs themselves with `date +%s.%N`);
- `array_throughput`: jobs/s for one `sbatch --array=0-(n-1) --wrap true`.

How it starts and stops Slurm: `Slurm(cpus=n)` (needs root and Debian's `slurm-wlm` and `munge`) reuses a running
munged or starts one (`runuser -u munge -- munged --force --num-threads=10`), writes a slurm.conf into a private
folder under /tmp owned by the `slurm` user, starts `slurmctld -D` and `slurmd -D` in the foreground and waits until
`sinfo` shows the node idle. Every Slurm command gets `SLURM_CONF` pointing at that file; the daemons listen on free
ports, so a system Slurm is left alone. Slurm's scheduling is left at its defaults. On exit it cancels the jobs,
stops the daemons by PID (SIGTERM, then SIGKILL), stops munged by its PID file only if it started it, kills any
leftover process that carries this Slurm's `SLURM_CONF`, and removes the folder.

Run: `.venv/bin/python benchmarks/slurm_peer.py [--cpus 2] [--jobs 200]`; or import `Slurm` from
`benchmarks.slurm_peer` (or `slurm_peer` with benchmarks/ on sys.path).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

MUNGE_RUN = Path("/run/munge")
MUNGE_PID = MUNGE_RUN / "munged.pid"
UP_TIMEOUT = 30.0  # seconds for munged, then the daemons, to come up
STOP_TIMEOUT = 10.0  # seconds a process gets after SIGTERM before SIGKILL
POLL = 0.05  # seconds between polls: fine enough for ~1 s figures, light on slurmctld
# slurmctld starts pending jobs in passes at most every batch_sched_delay (3 s by default; a job ending only counts
# towards the next pass). start_latency frees CPUs at offsets spread evenly over one such period, so its median is
# that of a CPU freeing at a random moment rather than locked to one phase of the passes.
SCHED_PASS = 3.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_pid(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL after `timeout`; for processes that are not our children (no zombie to reap)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(POLL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _stop_child(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"--- {path}: missing"
    return f"--- {path} (last {lines} lines)\n" + "\n".join(text[-lines:])


class Slurm:
    """A private one-node Slurm with `cpus` CPUs; a context manager that starts and stops it."""

    def __init__(self, cpus: int = 2) -> None:
        if cpus < 1:
            raise ValueError("cpus must be at least 1")
        self.cpus = cpus
        self.node = os.uname().nodename.split(".")[0]
        self.dir: Path | None = None
        self.env: dict[str, str] = {}
        self._daemons: list[subprocess.Popen[bytes]] = []
        self._munged_pid: int | None = None  # set only when this object started munged
        self._tag = 0  # makes the latency files of each round unique

    # --- start and stop -------------------------------------------------------------------------------------------

    def __enter__(self) -> Slurm:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("Slurm peer needs root (slurmd runs jobs as their user; munged runs as munge)")
        for tool in ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} not found: apt-get install -y slurm-wlm munge")
        try:
            self._start_munged()
            self._write_config()
            self._start_daemons()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Cancel jobs, stop what this object started (by PID), remove the folder; safe to call twice."""
        if self._daemons and all(p.poll() is None for p in self._daemons):
            # Jobs run under slurmstepd, which outlives slurmd: end them while slurmctld can still do it. A failure
            # here must not keep the daemons running; leftovers are killed below.
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._slurm(["scancel", "--user", "root"], check=False)
                self._wait_empty(timeout=15.0, check=False)
        for proc in reversed(self._daemons):  # slurmd first, then slurmctld
            _stop_child(proc)
        self._daemons.clear()
        if self.dir is not None:
            self._kill_leftovers(f"SLURM_CONF={self.dir / 'slurm.conf'}")
        if self._munged_pid is not None:
            _stop_pid(self._munged_pid)
            self._munged_pid = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def _start_munged(self) -> None:
        if subprocess.run(["munge", "-n"], capture_output=True, timeout=10).returncode == 0:
            return  # a munged already answers: reuse it and leave it running
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True, timeout=30)
        munge = pwd.getpwnam("munge")
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        os.chown(MUNGE_RUN, munge.pw_uid, munge.pw_gid)
        # Without --num-threads=10 every client here fails with "restart with --num-threads=10".
        started = subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force", "--num-threads=10"],
                                 capture_output=True, text=True, timeout=30)
        if started.returncode != 0:
            raise RuntimeError(f"munged failed ({started.returncode}):\n{started.stdout}{started.stderr}")
        deadline = time.monotonic() + UP_TIMEOUT
        while time.monotonic() < deadline:
            if self._munged_pid is None and MUNGE_PID.exists():
                text = MUNGE_PID.read_text().strip()
                self._munged_pid = int(text) if text.isdigit() else None
            if self._munged_pid is not None and subprocess.run(["munge", "-n"], capture_output=True,
                                                                timeout=10).returncode == 0:
                return
            time.sleep(POLL)
        log = _tail(Path("/var/log/munge/munged.log"))
        raise RuntimeError(f"munged did not answer within {UP_TIMEOUT:.0f} s\n{log}")

    def _write_config(self) -> None:
        slurm = pwd.getpwnam("slurm")
        self.dir = Path(tempfile.mkdtemp(prefix="slurm-peer-"))
        for sub in ("state", "spool", "jobs"):
            (self.dir / sub).mkdir()
        # slurmctld drops to SlurmUser=slurm, so its state, pid and log paths must be slurm's.
        for path in (self.dir, self.dir / "state", self.dir / "spool"):
            os.chown(path, slurm.pw_uid, slurm.pw_gid)
        os.chmod(self.dir, 0o755)  # root's jobs and slurmd (root) work in it too
        d = self.dir
        conf = f"""\
ClusterName=gridbench
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=slurm
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MailProg=/bin/true
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN
PartitionName=bench Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        (d / "slurm.conf").write_text(conf)
        os.chmod(d / "slurm.conf", 0o644)
        self.env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}

    def _start_daemons(self) -> None:
        assert self.dir is not None
        conf = str(self.dir / "slurm.conf")
        for name in ("slurmctld", "slurmd"):
            out = open(self.dir / f"{name}.out", "wb")  # noqa: SIM115 - the daemon owns it; closed just below
            with out:
                # Own session: a Ctrl-C meant for the benchmark must not kill the daemons before jobs are cancelled.
                self._daemons.append(subprocess.Popen([name, "-D", "-f", conf], env=self.env, stdout=out,
                                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                      start_new_session=True))
        deadline = time.monotonic() + UP_TIMEOUT
        state = ""
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self._daemons):
                break
            result = self._slurm(["sinfo", "-h", "-n", self.node, "-o", "%T"], check=False)
            state = result.stdout.strip()
            if result.returncode == 0 and state == "idle":
                return
            time.sleep(0.2)
        raise RuntimeError(f"Slurm did not come up within {UP_TIMEOUT:.0f} s (node state {state!r})\n"
                           + self._logs())

    def _logs(self) -> str:
        if self.dir is None:
            return ""
        return "\n".join(_tail(self.dir / name) for name in ("slurmctld.log", "slurmctld.out", "slurmd.log",
                                                              "slurmd.out"))

    def _kill_leftovers(self, marker: str) -> None:
        """Kill processes that carry this Slurm's SLURM_CONF (stray slurmstepd or jobs); the path is unique to us."""
        needle = marker.encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                _stop_pid(int(entry.name), timeout=2.0)

    # --- commands ---------------------------------------------------------------------------------------------------

    def _slurm(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}{result.stderr}\n"
                               + self._logs())
        return result

    def _sbatch(self, *args: str) -> str:
        """Submit one batch job; returns its id. Output goes nowhere, and jobs run in the private folder."""
        assert self.dir is not None
        out = self._slurm(["sbatch", "--parsable", "--output=/dev/null", f"--chdir={self.dir / 'jobs'}", *args])
        return out.stdout.strip().split(";")[0]

    def _queue(self, fmt: str = "%i") -> list[str]:
        return self._slurm(["squeue", "-h", "-o", fmt]).stdout.split()

    def _wait_empty(self, timeout: float, check: bool = True) -> float:
        """Poll squeue until no job is pending or running; returns the time.perf_counter() it was seen empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self._slurm(["squeue", "-h", "-o", "%i"], check=False)
            if result.returncode == 0 and not result.stdout.strip():
                return time.perf_counter()
            time.sleep(POLL)
        if check:
            raise RuntimeError(f"Slurm's queue still not empty after {timeout:.0f} s: {' '.join(self._queue())}")
        return time.perf_counter()

    def _until(self, what: str, timeout: float, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(POLL)
        queue = " ".join(self._queue("%i:%T:%r"))
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}; queue (id:state:reason): {queue}")

    # --- measurements -----------------------------------------------------------------------------------------------

    def submit_seconds(self, rounds: int = 7) -> float:
        """Median wall time of one `sbatch --wrap true` call (one warm-up call first); the jobs drain afterwards."""
        self._wait_empty(timeout=60 + 5 * rounds)
        self._sbatch("--wrap", "true")
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            self._sbatch("--wrap", "true")
            samples.append(time.perf_counter() - start)
        self._wait_empty(timeout=60 + 5 * rounds)
        return statistics.median(samples)

    def throughput(self, n: int = 200, timeout: float | None = None) -> float:
        """Jobs/s: n `sbatch --wrap true` back to back, from the first submit until the queue is empty."""
        self._wait_empty(timeout=60)
        start = time.perf_counter()
        for _ in range(n):
            self._sbatch("--wrap", "true")
        end = self._wait_empty(timeout=timeout if timeout is not None else 60 + 5 * n)
        return n / (end - start)

    def array_throughput(self, n: int = 200, timeout: float | None = None) -> float:
        """Jobs/s for one `sbatch --array=0-(n-1) --wrap true`, from the submit until the queue is empty."""
        self._wait_empty(timeout=60)
        start = time.perf_counter()
        self._sbatch(f"--array=0-{n - 1}", "--wrap", "true")
        end = self._wait_empty(timeout=timeout if timeout is not None else 60 + 5 * n)
        return n / (end - start)

    def start_latency(self, rounds: int = 5, timeout: float = 90.0) -> float:
        """Median seconds from a CPU freeing to a queued job starting on it.

        Each round fills every CPU with a blocker that waits for its own go file, then queues one more job and waits
        until a scheduler pass has weighed it (reason Resources or Priority). Round k then waits (k + 0.5) / rounds
        of SCHED_PASS and releases one blocker, freeing one CPU; the blocker writes its end time just before it
        exits, the queued job its start time as its first act.
        """
        samples = []
        for k in range(rounds):
            self._wait_empty(timeout=timeout)
            samples.append(self._latency_round((k + 0.5) / rounds * SCHED_PASS, timeout))
        self._wait_empty(timeout=timeout)
        return statistics.median(samples)

    def _latency_round(self, offset: float, timeout: float) -> float:
        assert self.dir is not None
        self._tag += 1
        jobs, tag = self.dir / "jobs", self._tag
        go = [jobs / f"go-{tag}-{i}" for i in range(self.cpus)]
        ends = [jobs / f"end-{tag}-{i}" for i in range(self.cpus)]
        started = jobs / f"start-{tag}"
        try:
            # Files appear whole (write, then mv), so a poll never reads half a time stamp.
            blockers = [self._sbatch("--wrap", f"while [ ! -e {g} ]; do sleep 0.02; done; "
                                     f"date +%s.%N > {e}.tmp && mv {e}.tmp {e}")
                        for g, e in zip(go, ends, strict=True)]
            self._until("the blockers to run", timeout, lambda: self._states(blockers) == {"RUNNING"})
            queued = self._sbatch("--wrap", f"date +%s.%N > {started}.tmp && mv {started}.tmp {started}")
            # Only a job the scheduler has already weighed is "queued behind" the blockers.
            self._until("the queued job to be considered", timeout,
                        lambda: self._reason(queued) in ("Resources", "Priority"))
            time.sleep(offset)
            go[0].touch()
            self._until("the queued job to start", timeout, started.exists)
            self._until("the blocker's end time", timeout, ends[0].exists)
            return float(started.read_text()) - float(ends[0].read_text())
        finally:
            for g in go:  # release the other blockers, also after an error
                g.touch()

    def _states(self, ids: Sequence[str]) -> set[str]:
        return set(self._slurm(["squeue", "-h", "-j", ",".join(ids), "-o", "%T"]).stdout.split())

    def _reason(self, job: str) -> str:
        return self._slurm(["squeue", "-h", "-j", job, "-o", "%r"]).stdout.strip()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure a private one-node Slurm as the peer of grid's job queue.")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs the Slurm node offers (default 2)")
    parser.add_argument("--jobs", type=int, default=200, help="jobs for the throughput figures (default 200)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds for the submit median (default 7)")
    args = parser.parse_args(argv)
    # SIGTERM becomes SystemExit so the with-block still stops the daemons.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    with Slurm(cpus=args.cpus) as slurm:
        print(f"Slurm {slurm.cpus} CPUs on {slurm.node}", flush=True)
        print(f"sbatch submit:        {slurm.submit_seconds(rounds=args.rounds) * 1000:.1f} ms (median)", flush=True)
        print(f"throughput:           {slurm.throughput(n=args.jobs):.2f} jobs/s ({args.jobs} jobs)", flush=True)
        print(f"start latency:        {slurm.start_latency(rounds=5):.2f} s (median of 5)", flush=True)
        print(f"array throughput:     {slurm.array_throughput(n=args.jobs):.2f} jobs/s (array of {args.jobs})",
              flush=True)


if __name__ == "__main__":
    main()
