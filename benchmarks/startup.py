"""CLI start-up: `grid --help` and `grid plugins list` beside `python -c 'import click'` and `ray --help`.

Prints medians from one run and the ratios; goal: `grid --help` within 2x of importing click.
Usage: .venv/bin/python benchmarks/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

BIN = os.path.dirname(sys.executable)


def median_seconds(argv: list[str], runs: int) -> float:
    subprocess.run(argv, capture_output=True, check=False)  # warm the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    grid = shutil.which("grid", path=BIN) or "grid"
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import click' (peer)": [sys.executable, "-c", "import click"],
        "grid --help": [grid, "--help"],
        "grid plugins list": [grid, "plugins", "list"],
    }
    ray = shutil.which("ray", path=BIN)
    if ray:
        cases["ray --help (peer)"] = [ray, "--help"]
    results = {name: median_seconds(argv, runs) for name, argv in cases.items()}
    click_time = results["python -c 'import click' (peer)"]
    print(f"{'command':36} {'median ms':>10} {'vs import click':>16}")
    for name, seconds in results.items():
        print(f"{name:36} {seconds * 1000:10.1f} {seconds / click_time:15.2f}x")
    ratio = results["grid --help"] / click_time
    print(f"\ngrid --help / import click = {ratio:.2f}x (goal <= 2.0x): {'met' if ratio <= 2 else 'NOT met'}")
    if ray:
        print(f"grid --help / ray --help = {results['grid --help'] / results['ray --help (peer)']:.2f}x")


if __name__ == "__main__":
    main()
