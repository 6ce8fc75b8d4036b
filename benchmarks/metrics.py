"""The cost of one sample per metrics source, from one run: psutil, procfs over a transport, nvml.

procfs runs its one shell command through the `local` transport here (over SSH the round trip
adds to it); its figure includes the script's own 0.2 s between its two /proc/stat readings, as
psutil's first sample includes its 0.2 s CPU window. nvml and nvidia-smi are timed where present.
No Ray. Usage: .venv/bin/python benchmarks/metrics.py [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable

from grid_core.builtin import nvml_metrics
from grid_core.builtin.local import LocalTransport
from grid_core.builtin.procfs_metrics import ProcfsSource
from grid_core.builtin.psutil_metrics import PsutilSource, nvidia_smi_gpus
from grid_core.config import NodeConfig


def median_ms(sample: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sample()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    local = NodeConfig(name="here", transport="local")
    remote = NodeConfig(name="remote", transport="ssh")  # procfs serves non-local nodes; the transport stays local
    transport = LocalTransport(local)
    psutil_source, procfs = PsutilSource(), ProcfsSource()

    start = time.perf_counter()
    psutil_source.sample(local, transport)
    rows = [("psutil, first sample (0.2 s CPU window)", (time.perf_counter() - start) * 1000)]
    time.sleep(0.25)  # later samples measure CPU since the previous one, without waiting
    rows.append(("psutil, later samples", median_ms(lambda: psutil_source.sample(local, transport), runs)))
    rows.append(("procfs via the local transport", median_ms(lambda: procfs.sample(remote, transport), runs)))
    status = nvml_metrics.READER.status()
    if status.available:
        rows.append(("nvml, GPUs with processes and owners", median_ms(nvml_metrics.local_gpus, runs)))
    if shutil.which("nvidia-smi"):
        rows.append(("nvidia-smi, one run (the fallback)", median_ms(nvidia_smi_gpus, runs)))
    print(f"medians of {runs} samples; nvml: {status.line()}")
    print(f"{'source':44} {'ms per sample':>14}")
    for name, ms in rows:
        print(f"{name:44} {ms:14.2f}")


if __name__ == "__main__":
    main()
