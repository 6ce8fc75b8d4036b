"""The lab's queue beside Slurm's, from one run on the same CPUs (issue 28).

Slurm is Debian's `slurm-wlm` with `munge`, one node of this machine, started and stopped here
(benchmarks/slurm_peer.py). grid's cluster is the test suite's two-node cluster of this machine
(tests/local_pair.py, 2 CPUs a node); with --remote also a two-node cluster on test hosts
(tests/testbed.py) driven from this machine, which is then not a node. Figures:
- submit: a detached `grid run` beside `grid --help` (goal <= 2.0x), of a job that starts at
  once and of one that waits in a full queue, and `sbatch` for the record;
- throughput: N trivial jobs through each queue, submitted one by one and as one array, jobs/s
  (goal: at least Slurm's; aim for 10x);
- start: from a CPU freeing (a blocker's last act is to write the time) to the queued job's
  first act (it writes the time), median (goal <= 0.5 s; Slurm beside it);
- status with a full queue: N jobs waiting, each status-type command beside `grid --help`
  (goal <= 2.0x), on the head and, with --remote, from a machine that is not a node;
- memory: the grid service's resident memory with 10,000 finished jobs in its store, beside
  the same service with an empty one.
Named lab_queue.py, not queue.py: a script's own folder comes first on sys.path, and a queue.py
there would stand for the standard library's `queue` in every benchmark beside it.
Usage: .venv/bin/python benchmarks/lab_queue.py [--jobs N] [--rounds N] [--remote] [--no-slurm]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRID = [sys.executable, "-m", "grid_core"]
ONE_BY_ONE = 200  # jobs submitted one CLI call each (Slurm's figure here is for 200 too)
STATUS = (("cluster", "status", "--json"), ("cluster", "status"), ("offload", "auto", "--status", "--json"),
          ("boost", "list", "--json"), ("jobs", "list", "--json"), ("jobs", "list"), ("memory", "ls", "--json"))


def timed(argv: list[str], env: dict[str, str], check: bool = True) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    took = time.perf_counter() - start
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr[-2000:]}")
    return took, result.stdout


def median_of(rounds: int, call: Callable[[], float]) -> float:
    call()  # the first warms the caches (bytecode, the config's), as any use would
    return statistics.median(call() for _ in range(rounds))


def jobs(env: dict[str, str]) -> list[dict[str, object]]:
    out = subprocess.run([*GRID, "jobs", "list", "--json", "--all"], capture_output=True, text=True, env=env,
                         check=True, timeout=600).stdout
    found: list[dict[str, object]] = json.loads(out)
    return found


def wait_ended(env: dict[str, str], ids: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {str(j["id"]): j["state"] for j in jobs(env)}
        if all(states.get(i) not in (None, "queued", "running") for i in ids):
            bad = {i: s for i, s in states.items() if i in ids and s != "succeeded"}
            if bad:
                raise SystemExit(f"jobs did not succeed: {bad}")
            return
        time.sleep(0.5)
    raise SystemExit(f"{len(ids)} jobs did not end within {timeout:.0f} s")


def submit(env: dict[str, str], *args: str) -> str:
    return timed([*GRID, "run", "--detach", *args], env)[1].strip()


def ratio(value: float, floor: float, goal: float) -> str:
    return f"{value / floor:5.2f}x (goal <= {goal:.1f}x: {'met' if value / floor <= goal else 'NOT met'})"


def status_figures(env: dict[str, str], rounds: int, where: str) -> float:
    """Each status command beside `grid --help`, interleaved round by round; the --help median."""
    cases = {"grid --help": [*GRID, "--help"], **{f"grid {' '.join(c)}": [*GRID, *c] for c in STATUS}}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(rounds + 1):
        for name, argv in cases.items():
            took = timed(argv, env)[0]
            if round_:
                times[name].append(took)
    floor = statistics.median(times["grid --help"])
    print(f"\nstatus commands {where} (medians of {rounds}):")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"  {name:36s} {median * 1000:7.0f} ms" + ("" if name == "grid --help" else "  " + ratio(median, floor,
                                                                                                   2.0)))
    return floor


def submit_at_rest(env: dict[str, str], rounds: int) -> tuple[float, float]:
    """Medians of `grid --help` and of a detached submission of a job that starts at once,
    interleaved round by round, each submission made with the cluster at rest. On these 2 CPUs a
    job's start costs Ray a worker process (about 0.4 s of a CPU, for its runner or for the spare
    made after it), which would otherwise land in the next submission's time, as it would not on a
    lab's nodes. The figure of a full queue is of submissions while the cluster is busy."""
    helps, submits = [], []
    for r in range(rounds + 1):  # the first warms the caches (bytecode, the config's), as any use would
        time.sleep(2.0)
        took_help = timed([*GRID, "--help"], env)[0]
        took_submit = timed([*GRID, "run", "--detach", "--", "true"], env)[0]
        if r:
            helps.append(took_help)
            submits.append(took_submit)
    return statistics.median(helps), statistics.median(submits)


def start_latency(env: dict[str, str], work: Path, cpus: int, rounds: int) -> float:
    """Median seconds from a blocker's end to the queued job's start, all CPUs busy before. The
    blockers run 3 s and more: each start costs Ray a worker process (about 0.4 s of a CPU, for a
    job's runner or for the spare made after it), and the first must end once those are done, on a
    machine as quiet as a lab's cluster whose jobs run for minutes."""
    samples = []
    for r in range(rounds):
        stamp = work / f"start-{r}"
        stamp.mkdir()
        blockers = [submit(env, "--", "sh", "-c", f"sleep {3 + 0.5 * i}; date +%s.%N > {stamp}/end-{i}")
                    for i in range(cpus)]
        queued = submit(env, "--", "sh", "-c", f"date +%s.%N > {stamp}/start")
        wait_ended(env, {*blockers, queued}, 120)
        first_end = min(float((stamp / f"end-{i}").read_text()) for i in range(cpus))
        samples.append(float((stamp / "start").read_text()) - first_end)
    return statistics.median(samples)


def throughput(env: dict[str, str], n: int) -> tuple[float, float]:
    """jobs/s for min(n, ONE_BY_ONE) trivial jobs submitted one by one, and for an array of n."""
    start = time.perf_counter()
    ids = {submit(env, "--", "true") for _ in range(min(n, ONE_BY_ONE))}
    wait_ended(env, ids, 60 + 2 * n)
    one_by_one = len(ids) / (time.perf_counter() - start)
    start = time.perf_counter()
    array = submit(env, "--array", f"0-{n - 1}", "--", "true")
    wait_ended(env, {f"{array}.{i}" for i in range(n)}, 60 + 2 * n)
    return one_by_one, n / (time.perf_counter() - start)


def service_rss() -> int:
    """The grid service's resident memory, bytes (its process is `ray::GridService`)."""
    out = subprocess.run(["pgrep", "-f", "ray::GridService"], capture_output=True, text=True).stdout.split()
    if len(out) != 1:
        raise SystemExit(f"expected one grid service process, found {out}")
    with open(f"/proc/{out[0]}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def seed_finished(store: Path, n: int) -> None:
    """n finished jobs in the store, each with 1 KiB of output, as the queue would have left them."""
    from grid_core.types import JobRecord, wire

    db = sqlite3.connect(store / "jobs.db")
    rows = []
    for i in range(n):
        job = JobRecord(id=f"seed{i:06x}", node="head", argv=("python", "step.py", str(i)), state="succeeded",
                        submitted=time.time() - 3600, started=time.time() - 3500, ended=time.time() - 3400,
                        exit_status=0, cpus=1.0)
        rows.append((job.id, job.state, job.ended, json.dumps(wire().unstructure(job)), "{}"))
        (store / "output" / job.id).write_text(json.dumps([0, "x" * 1024]) + "\n")
    with db:
        db.executemany("INSERT INTO jobs (id, state, ended, record, spec) VALUES (?, ?, ?, ?, ?)", rows)
    db.close()


def grid_figures(args: argparse.Namespace) -> dict[str, float]:
    from tests.local_pair import start_pair

    pair = start_pair()
    c = next(pair)
    env = {k: v for k, v in {**os.environ, **c["env"]}.items() if k != "PYTHONDONTWRITEBYTECODE"}
    work = Path(tempfile.mkdtemp(prefix="gqb", dir="/tmp"))
    figures: dict[str, float] = {}
    try:
        figures["help"], figures["submit"] = submit_at_rest(env, args.rounds)
        figures["start"] = start_latency(env, work, cpus=4, rounds=args.rounds)
        figures["one_by_one"], figures["array"] = throughput(env, args.jobs)
        blockers = [submit(env, "--", "sleep", "3600") for _ in range(4)]
        submit(env, "--array", f"0-{args.jobs - 1}", "--", "true")  # all wait behind the blockers
        figures["status_help"] = status_figures(env, args.rounds, f"on the head, {args.jobs} jobs waiting")
        figures["submit_full"] = median_of(args.rounds, lambda: timed([*GRID, "run", "--detach", "--", "true"],
                                                                      env)[0])
        for job in blockers:
            timed([*GRID, "jobs", "stop", job], env)
        rss_before = service_rss()
        store = next(Path(c["root"]).glob("xdg/grid/jobs/*/jobs.db")).parent
        seed_finished(store, 10_000)
        timed([*GRID, "cluster", "start", "--restart-service"], env)
        timed([*GRID, "jobs", "list", "--all", "--json"], env)
        figures["rss_empty"], figures["rss_10k"] = rss_before, service_rss()
    finally:
        next(pair, None)
    return figures


def remote_figures(args: argparse.Namespace) -> None:
    """From this machine, which is not a node, to a two-node cluster on test hosts."""
    from tests.testbed import Testbed

    work = Path(tempfile.mkdtemp(prefix="gqr", dir="/tmp"))
    (work / "home").mkdir()
    (work / "run").mkdir(mode=0o700)
    with Testbed(n_hosts=2, workdir=work / "tb") as bed:
        config = bed.write_grid_config(work / "grid.toml", name="qbench", backend={"python": sys.executable},
                                       node_fields={"cpu_count": 1})
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update({"HOME": str(work / "home"), "GRID_STATE_DIR": str(work / "state"), "GRID_CONFIG": str(config),
                    "XDG_RUNTIME_DIR": str(work / "run")})
        timed([*GRID, "cluster", "start"], env)
        try:
            help_remote, submit_remote = submit_at_rest(env, args.rounds)
            blockers = [submit(env, "--node", h.name, "--", "sleep", "3600") for h in bed.hosts]
            submit(env, "--array", f"0-{args.jobs - 1}", "--", "true")
            status_figures(env, args.rounds, f"from a machine that is not a node, two nodes, {args.jobs} jobs waiting")
            print(f"  {'grid run --detach -- true':36s} {submit_remote * 1000:7.0f} ms  "
                  + ratio(submit_remote, help_remote, 2.0) + f"   (at rest, beside --help {help_remote * 1000:.0f} ms)")
            for job in blockers:
                timed([*GRID, "jobs", "stop", job], env)
        finally:
            subprocess.run([*GRID, "cluster", "stop"], env=env, capture_output=True, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs for throughput and the full queue")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--remote", action="store_true", help="also from a machine that is not a node")
    parser.add_argument("--no-slurm", action="store_true", help="grid's figures alone")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    slurm: dict[str, float] = {}
    if not args.no_slurm:
        from benchmarks.slurm_peer import Slurm

        with Slurm(cpus=os.cpu_count() or 2) as peer:
            slurm = {"submit": peer.submit_seconds(rounds=args.rounds),
                     "one_by_one": peer.throughput(n=min(args.jobs, ONE_BY_ONE)),
                     "array": peer.array_throughput(n=min(args.jobs, ONE_BY_ONE)),
                     "start": peer.start_latency(rounds=min(args.rounds, 5))}
    g = grid_figures(args)
    if args.remote:
        remote_figures(args)

    def beside(key: str, unit: str, scale: float = 1.0) -> str:
        return f"   Slurm {slurm[key] * scale:8.2f} {unit}" if key in slurm else ""

    print(f"\non the head, two nodes of 2 CPUs (medians of {args.rounds}); Slurm on the same {os.cpu_count()} CPUs:")
    print(f"  grid --help                   {g['help'] * 1000:8.1f} ms")
    print(f"  submit, grid run --detach     {g['submit'] * 1000:8.1f} ms  {ratio(g['submit'], g['help'], 2.0)}"
          + beside("submit", "ms (sbatch)", 1000))
    print(f"  ... into a full queue         {g['submit_full'] * 1000:8.1f} ms  "
          f"{ratio(g['submit_full'], g['help'], 2.0)}   (nothing starts: no job's start-up shares the CPUs)")
    for key, what in (("one_by_one", f"{min(args.jobs, ONE_BY_ONE)} jobs one by one"),
                      ("array", f"an array of {args.jobs}")):
        ours = g[key]  # Slurm's array is of ONE_BY_ONE too: its rate is the same for more, only slower to get
        theirs = f"   Slurm {slurm[key]:6.2f} jobs/s   {ours / slurm[key]:5.2f}x Slurm's rate" if key in slurm else ""
        print(f"  throughput, {what:22s} {ours:6.2f} jobs/s{theirs}")
    verdict = "met" if g["start"] <= 0.5 else "NOT met"
    print(f"  start after a CPU frees        {g['start']:8.2f} s   (goal <= 0.5 s: {verdict})" + beside("start", "s"))
    print(f"  service memory, empty store    {g['rss_empty'] / 2**20:8.1f} MiB")
    print(f"  service memory, 10,000 kept    {g['rss_10k'] / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
