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
  4. times one sample through NVML beside one through nvidia-smi (median of 10 each).
Exit status: 0 every check passed, 1 a check failed, 2 no GPU or NVML to check.
"""

from __future__ import annotations

import glob
import select
import shutil
import statistics
import subprocess
import sys
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
    failed = [r for r in results if r[0] == "FAIL"]
    print(f"\n{len(results) - len(failed)} of {len(results)} checks passed or skipped; "
          f"{len(failed)} failed; {time.perf_counter() - started:.1f} s in all")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
