"""Check grid's `nvml` metrics source on a machine with an NVIDIA GPU, against nvidia-smi. Installs nothing.

    python tests/gpu/check_nvml.py          # from the repository root; about 10-30 s

Needs only the standard library, grid's source tree and the wheels in .gpu-wheels/ (nvidia-ml-py,
attrs, pluggy: pure Python, imported straight from the wheel files) when the interpreter lacks
them. It:
  1. reports NVML's status (driver and NVML versions, GPU count) and how long NVML took to start;
  2. starts a small GPU process (a CUDA context and 256 MiB through libcuda via ctypes) as the
     child of a process titled `ray::JobRunner`, as a grid job runs, unless libcuda is missing;
  3. compares the source's readings with `nvidia-smi --query-gpu` and `--query-compute-apps`,
     and checks that the GPU process is listed with its memory and labelled as a grid job;
  4. compares grid's GPU inventory (grid_core/gpus.py: model, memory, UUID) with
     `nvidia-smi --query-gpu=index,name,memory.total,uuid`;
  5. times one sample through NVML beside one through nvidia-smi (median of 10 each);
  6. where Ray and grid's plugins are installed for this interpreter: starts a one-node cluster of
     this machine (its own state, temp dir and port), runs `grid run --gpus 1 --gpu-type <GPU 0's
     model>` with a job that takes a CUDA context, checks the job sees CUDA_VISIBLE_DEVICES and
     that its process is in GPU 0's readings as that job, then stops the cluster by PID.
Exit status: 0 every check passed, 1 a check failed, 2 no GPU or NVML to check.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), *sorted(glob.glob(str(REPO / ".gpu-wheels" / "*.whl")))]

from grid_core.builtin import nvml_metrics  # noqa: E402  (needs the path above)
from grid_core.builtin.psutil_metrics import nvidia_smi_gpus  # noqa: E402
from grid_core.metrics import MIB, ProcessEntry, parse_nvidia_smi  # noqa: E402
from grid_core.types import GpuReading  # noqa: E402

GPU_BYTES = 256 * MIB
READY_SECONDS = 30.0
RUNS = 10
# The GPU process: a context on GPU 0 holding GPU_BYTES until its stdin closes.
CHILD = f"""
import ctypes, os, sys
cuda = ctypes.CDLL("libcuda.so.1")
def check(status, what):
    if status != 0:
        print("cuda-error", what, status, flush=True)
        sys.exit(3)
check(cuda.cuInit(0), "cuInit")
device, context, memory = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
check(cuda.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
check(cuda.cuCtxCreate_v2(ctypes.byref(context), 0, device), "cuCtxCreate_v2")
check(cuda.cuMemAlloc_v2(ctypes.byref(memory), {GPU_BYTES}), "cuMemAlloc_v2")
print("ready", os.getpid(), flush=True)
sys.stdin.read()
"""
# Its parent, titled as Ray titles the actor that runs a grid job; argv[0] is the title, so the
# interpreter's path comes as an argument.
RUNNER = "import subprocess, sys; sys.exit(subprocess.call([sys.argv[1], '-c', sys.argv[2]]))"

results: list[tuple[str, str, str]] = []


def report(state: str, name: str, detail: str) -> None:
    results.append((state, name, detail))
    print(f"{state:4} {name}: {detail}", flush=True)


def proc_entry(pid: int) -> ProcessEntry | None:
    """A process from /proc (the standard library only), for the owner mapping."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    title = argv[0].decode(errors="replace") if argv and argv[0] else stat[stat.find("(") + 1:stat.rfind(")")]
    return ProcessEntry(pid, int(stat[stat.rfind(")") + 2:].split()[1]), title)


def start_gpu_process() -> tuple[subprocess.Popen[str] | None, int | None]:
    """The runner and its CUDA child's pid, or (None, None) when no CUDA process can start."""
    try:
        import ctypes

        ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        report("SKIP", "gpu process", f"libcuda.so.1 cannot be loaded ({exc})")
        return None, None
    runner = subprocess.Popen(["ray::JobRunner", "-c", RUNNER, sys.executable, CHILD], executable=sys.executable,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    started = time.monotonic()
    ready, _, _ = select.select([runner.stdout], [], [], READY_SECONDS)
    line = runner.stdout.readline().split() if ready else []
    if line[:1] != ["ready"]:
        runner.kill()
        report("FAIL", "gpu process", f"the CUDA process did not start: {' '.join(line) or 'no answer in time'}")
        return None, None
    report("PASS", "gpu process", f"pid {line[1]} holds a CUDA context and {GPU_BYTES // MIB} MiB on GPU 0 "
           f"(ready in {time.monotonic() - started:.1f} s), child of a `ray::JobRunner` process")
    return runner, int(line[1])


def smi(*query: str) -> str:
    return subprocess.run(["nvidia-smi", *query], capture_output=True, text=True, timeout=30, check=True).stdout


def near(a: float | None, b: float | None, tolerance: float) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= tolerance)


def compare_gpus(readings: tuple[GpuReading, ...]) -> None:
    text = smi("--query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw",
               "--format=csv,noheader,nounits")
    theirs = {g.index: g for g in parse_nvidia_smi(text)}
    ours = {g.index: g for g in readings}
    if set(theirs) != set(ours):
        report("FAIL", "gpu list", f"nvml sees GPUs {sorted(ours)}, nvidia-smi {sorted(theirs)}")
    for index in sorted(set(theirs) & set(ours)):
        a, b = ours[index], theirs[index]
        checks = [
            ("name", a.name == b.name, f"{a.name!r} vs {b.name!r}"),
            ("memory total", near(a.memory_total_bytes, b.memory_total_bytes, MIB),
             f"{a.memory_total_bytes / MIB:.0f} vs {b.memory_total_bytes / MIB:.0f} MiB"),
            ("memory used", near(a.memory_used_bytes, b.memory_used_bytes, max(64 * MIB, 0.02 * b.memory_total_bytes)),
             f"{a.memory_used_bytes / MIB:.0f} vs {b.memory_used_bytes / MIB:.0f} MiB"),
            ("utilisation", near(a.util_percent, b.util_percent, 30),  # instants of a changing figure
             f"{a.util_percent:.0f} vs {b.util_percent:.0f} %"),
            ("temperature", near(a.temperature_c, b.temperature_c, 3), f"{a.temperature_c} vs {b.temperature_c} °C"),
            ("power", near(a.power_watts, b.power_watts, max(30.0, 0.15 * (b.power_watts or 0))),
             f"{a.power_watts} vs {b.power_watts} W"),
        ]
        for name, ok, detail in checks:
            report("PASS" if ok else "FAIL", f"gpu {index} {name}", f"nvml {detail} nvidia-smi")


def compare_processes(readings: tuple[GpuReading, ...], child: int | None) -> None:
    import pynvml

    uuids = {}
    for g in readings:
        uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(g.index))
        uuids[uuid.decode() if isinstance(uuid, bytes) else uuid] = g.index
    theirs = {}
    for line in smi("--query-compute-apps=pid,used_memory,gpu_uuid", "--format=csv,noheader,nounits").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit():
            memory = int(parts[1]) * MIB if parts[1].isdigit() else None
            theirs[(uuids.get(parts[2], -1), int(parts[0]))] = memory
    ours = {(g.index, p.pid): p for g in readings for p in g.processes if p.kind == "compute"}
    same = set(ours) == set(theirs)
    report("PASS" if same else "FAIL", "compute processes",
           f"nvml {sorted(ours)} vs nvidia-smi {sorted(theirs)} (gpu, pid)")
    for key in sorted(set(ours) & set(theirs)):
        used, expected = ours[key].memory_used_bytes, theirs[key]
        ok = near(used, expected, MIB)
        report("PASS" if ok else "FAIL", f"process {key[1]} memory", f"nvml {used} vs nvidia-smi {expected} bytes")
    if child is None:
        return
    mine = ours.get((0, child))
    if mine is None:
        others = [k for k in ours if k[0] == 0]
        state = "WARN" if others else "FAIL"
        report(state, "gpu process listed", f"pid {child} is not among GPU 0's processes {others}"
               + (" (NVML reports pids of another PID namespace: a container?)" if others else ""))
        return
    ok = (mine.memory_used_bytes or 0) >= GPU_BYTES
    report("PASS" if ok else "FAIL", "gpu process memory", f"{(mine.memory_used_bytes or 0) / MIB:.0f} MiB "
           f"(at least the {GPU_BYTES // MIB} MiB it allocated)")
    ok = (mine.owner, mine.job_pid) == ("grid job", child)
    report("PASS" if ok else "FAIL", "gpu process owner", f"owner {mine.owner!r}, job pid {mine.job_pid}")


def compare_inventory(readings: tuple[GpuReading, ...]) -> None:
    """grid's inventory of this machine's GPUs against nvidia-smi's: model, total memory, UUID."""
    from grid_core import gpus

    theirs = {}
    for line in smi("--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            theirs[int(parts[0])] = (parts[1], int(parts[2]) * MIB if parts[2].isdigit() else 0, parts[3])
    ours = gpus.measured(readings)
    print(f"inventory: {gpus.summary(ours)}")
    for g in ours:
        name, memory, uuid = theirs.get(g.index, ("?", 0, "?"))
        report("PASS" if g.model == name else "FAIL", f"gpu {g.index} model",
               f"grid {g.model!r} vs {name!r} nvidia-smi")
        report("PASS" if near(g.memory_bytes, memory, MIB) else "FAIL", f"gpu {g.index} inventory memory",
               f"grid {g.memory_bytes / MIB:.0f} vs {memory / MIB:.0f} MiB nvidia-smi "
               f"({gpus.size_gb(g.memory_bytes)} GB)")
        report("PASS" if g.uuid == uuid else "FAIL", f"gpu {g.index} uuid", f"grid {g.uuid} vs {uuid} nvidia-smi")
        print(f"  gpu {g.index}: Ray's accelerator_type {gpus.ray_name(g.model)!r}")


# The job: a CUDA context and GPU_BYTES on its GPU, held until the check says it has seen it.
JOB = CHILD.replace('print("ready", os.getpid(), flush=True)\nsys.stdin.read()', """\
print("cuda_visible_devices=" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), flush=True)
import time
deadline = time.time() + 90
while not os.path.exists(sys.argv[1]) and time.time() < deadline:
    time.sleep(0.2)""")


def check_grid_job(readings: tuple[GpuReading, ...], lookup: Callable[[int], ProcessEntry | None]) -> None:
    """`grid run --gpus 1 --gpu-type <model>` on a one-node cluster of this machine: the job sees
    CUDA_VISIBLE_DEVICES, and its process is in that GPU's readings, owned by the job."""
    grid = shutil.which("grid") or str(REPO / ".venv" / "bin" / "grid")
    try:
        import ray  # noqa: F401

        import grid_plugin_ray_backend  # noqa: F401
    except ImportError as exc:
        report("SKIP", "grid job", f"Ray or grid's ray backend is not installed for {sys.executable} ({exc})")
        return
    if not os.access(grid, os.X_OK) or not readings:
        report("SKIP", "grid job", "no `grid` command found" if readings else "no GPU readings")
        return
    model = readings[0].name
    root = Path(tempfile.mkdtemp(prefix="gck", dir="/tmp"))  # short: Unix socket paths hold 107 bytes
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = root / "grid.toml"
    config.write_text(f'name = "gpucheck"\n[[nodes]]\nname = "here"\nrole = "head"\ntransport = "local"\n'
                      f'[backend]\nport = {port}\n')
    env = {**os.environ, "HOME": str(root / "home"), "GRID_STATE_DIR": str(root / "state"),
           "RAY_TMPDIR": str(root / "rt"), "RAY_AUTH_MODE": "disabled", "GRID_CONFIG": str(config)}
    for key in ("HOME", "RAY_TMPDIR"):
        Path(env[key]).mkdir(parents=True)

    def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([grid, *args], env=env, capture_output=True, text=True, timeout=timeout)

    sentinel = root / "seen"
    try:
        started = cli("cluster", "start")
        if started.returncode != 0:
            report("FAIL", "grid cluster start", started.stderr.strip()[-500:])
            return
        job = cli("run", "--detach", "--gpus", "1", "--gpu-type", model, "--", sys.executable, "-c", JOB,
                  str(sentinel), timeout=60)
        if job.returncode != 0:
            report("FAIL", "grid run --gpu-type", job.stderr.strip()[-500:])
            return
        job_id = job.stdout.strip()
        pid, deadline, seen = None, time.monotonic() + 60, None
        while time.monotonic() < deadline and seen is None:
            listed = json.loads(cli("jobs", "list", "--json", timeout=30).stdout or "[]")
            pid = next((j.get("pid") for j in listed if j["id"] == job_id), None)
            if pid:
                seen = next((p for g in nvml_metrics.READER.gpus(lookup) for p in g.processes
                             if p.pid == pid or p.job_pid == pid), None)
            time.sleep(0.5)
        sentinel.touch()
        logs = cli("jobs", "logs", job_id, "--follow", timeout=120)
        visible = next((line.split("=", 1)[1] for line in logs.stdout.splitlines()
                        if line.startswith("cuda_visible_devices=")), "not printed")
        report("PASS" if visible not in ("unset", "", "not printed") else "FAIL", "grid job CUDA_VISIBLE_DEVICES",
               f"{visible!r} (job {job_id}, --gpu-type {model!r}, exit status {logs.returncode})")
        report("PASS" if seen is not None and seen.owner == "grid job" else "FAIL", "grid job in the GPU readings",
               f"pid {pid}: " + ("not listed on any GPU" if seen is None else
                                 f"{(seen.memory_used_bytes or 0) / MIB:.0f} MiB, owner {seen.owner!r}"))
    finally:
        sentinel.touch()
        cli("cluster", "stop", timeout=120)
        with contextlib.suppress(Exception):  # whatever the stop left, by PID (never `ray stop`)
            from grid_core.config import load_file
            from grid_plugin_ray_backend import layout, onnode

            os.environ["RAY_TMPDIR"], os.environ["GRID_STATE_DIR"] = env["RAY_TMPDIR"], env["GRID_STATE_DIR"]
            cfg = load_file(config)
            for pid in onnode.grid_processes(layout.node_dir(cfg, cfg.head))[0]:
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
        shutil.rmtree(root, ignore_errors=True)


def median_ms(sample: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        sample()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    started = time.perf_counter()
    status = nvml_metrics.READER.status()
    init_ms = (time.perf_counter() - started) * 1000
    print(f"python {sys.version.split()[0]}, grid at {REPO}")
    if not status.available:
        report("SKIP", "nvml", status.reason)
        return 2
    report("PASS", "nvml", f"{status.line()}; NVML started in {init_ms:.0f} ms")
    if not shutil.which("nvidia-smi"):
        report("SKIP", "nvidia-smi", "not installed: nothing to compare with")
        return 2
    try:
        import psutil  # noqa: F401

        lookup, how = nvml_metrics.local_process, "psutil (the source's own lookup)"
    except ImportError:
        lookup, how = proc_entry, "/proc (psutil is not installed)"
    print(f"process owners from {how}")
    runner, child = start_gpu_process()
    try:
        if runner is not None:
            time.sleep(1.0)  # NVML lists a new context within a moment
        readings = nvml_metrics.READER.gpus(lookup)
        for g in readings:
            procs = ", ".join(f"{p.pid} {p.kind} {(p.memory_used_bytes or 0) / MIB:.0f} MiB {p.owner or '-'}"
                              for p in g.processes) or "none"
            print(f"  gpu {g.index} {g.name}: {g.util_percent:.0f}% use, {g.memory_used_bytes / MIB:.0f}/"
                  f"{g.memory_total_bytes / MIB:.0f} MiB, {g.temperature_c} °C, {g.power_watts} W; processes: {procs}")
        compare_gpus(readings)
        compare_processes(readings, child)
        compare_inventory(readings)
        nvml_ms = median_ms(lambda: nvml_metrics.READER.gpus(lookup))
        smi_ms = median_ms(nvidia_smi_gpus)
        print(f"\none sample, median of {RUNS}: nvml {nvml_ms:.2f} ms (with processes and owners), "
              f"nvidia-smi {smi_ms:.1f} ms: nvml is {smi_ms / nvml_ms:.0f}x faster")
    finally:
        if runner is not None:
            assert runner.stdin is not None
            runner.stdin.close()
            try:
                runner.wait(timeout=10)
            except subprocess.TimeoutExpired:
                runner.kill()
    check_grid_job(nvml_metrics.READER.gpus(lookup), lookup)
    failed = [r for r in results if r[0] == "FAIL"]
    print(f"\n{len(results) - len(failed)} of {len(results)} checks passed or skipped; "
          f"{len(failed)} failed; {time.perf_counter() - started:.1f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
