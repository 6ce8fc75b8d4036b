"""CLI start-up: `grid --help`, `grid plugins list` and `grid config validate` beside their floors.

Whole-process medians from one run, the commands interleaved round by round so that load on the
machine hits them alike: `python -c pass`, `python -c 'import click'` (the floor grid is held to),
grid's commands with a current plugin index, `grid --help` with no index (the first run after a
pip install), `grid --help` with a broken third-party plugin installed (on PYTHONPATH: a
distribution whose module imports asyncio, then a dependency that is missing), and `ray --help`.
Goals: `--help` at most 1.5x `import click`, also with the broken plugin; the others 2.0x.
Bytecode caches are allowed (PYTHONDONTWRITEBYTECODE is dropped), as in any installed copy.
Usage: .venv/bin/python benchmarks/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BIN = os.path.dirname(sys.executable)
GOALS = {"grid --help": 1.5, "grid --help, a broken plugin installed": 1.5, "grid plugins list": 2.0,
         "grid config validate": 2.0}
BROKEN = "import asyncio  # what a plugin's imports cost before the one that fails\nimport grid_bench_missing_dep\n"


def broken_plugin(root: Path) -> Path:
    """A directory holding an installed-looking distribution whose plugin fails to import."""
    (root / "grid_bench_broken.py").parent.mkdir(parents=True, exist_ok=True)
    (root / "grid_bench_broken.py").write_text(BROKEN)
    meta = root / "grid_bench_broken-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: grid-bench-broken\nVersion: 1.0\n")
    (meta / "entry_points.txt").write_text("[grid]\nbench-broken = grid_bench_broken\n")
    return root


def timed(argv: list[str], env: dict[str, str], cwd: str, before: Callable[[], None] | None = None) -> float:
    if before:
        before()
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, env=env, cwd=cwd)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=11)
    runs = parser.parse_args().runs
    grid = shutil.which("grid", path=BIN) or "grid"
    work = Path(tempfile.mkdtemp(prefix="grid-startup-"))  # no ./grid.toml: the embedded default config
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "GRID_CONFIG")}
    env["GRID_STATE_DIR"] = str(work / "state")
    cold_state = work / "cold"
    broken = {**env, "PYTHONPATH": str(broken_plugin(work / "broken")), "GRID_STATE_DIR": str(work / "broken-state")}

    def drop_index() -> None:
        shutil.rmtree(cold_state, ignore_errors=True)

    cases: dict[str, tuple[list[str], dict[str, str], Callable[[], None] | None]] = {
        "python -c pass": ([sys.executable, "-c", "pass"], env, None),
        "python -c 'import click' (floor)": ([sys.executable, "-c", "import click"], env, None),
        "grid --help": ([grid, "--help"], env, None),
        "grid plugins list": ([grid, "plugins", "list"], env, None),
        "grid config validate": ([grid, "config", "validate"], env, None),
        "grid --help, no index (after install)": ([grid, "--help"], {**env, "GRID_STATE_DIR": str(cold_state)},
                                                  drop_index),
        "grid --help, a broken plugin installed": ([grid, "--help"], broken, None),
    }
    ray = shutil.which("ray", path=BIN)
    if ray:
        cases["ray --help (peer)"] = ([ray, "--help"], env, None)
    for argv, case_env, _before in cases.values():  # warm the page cache, bytecode and the index
        subprocess.run(argv, capture_output=True, check=True, env=case_env, cwd=work)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, (argv, case_env, before) in cases.items():
            times[name].append(timed(argv, case_env, str(work), before))
    shutil.rmtree(work, ignore_errors=True)

    results = {name: statistics.median(t) for name, t in times.items()}
    floor = results["python -c 'import click' (floor)"]
    print(f"medians of {runs} interleaved runs")
    print(f"{'command':42} {'median ms':>10} {'vs import click':>16}")
    for name, seconds in results.items():
        print(f"{name:42} {seconds * 1000:10.1f} {seconds / floor:15.2f}x")
    print()
    for name, goal in GOALS.items():
        ratio = results[name] / floor
        print(f"{name} / import click = {ratio:.2f}x (goal <= {goal}x): {'met' if ratio <= goal else 'NOT met'}")
    if ray:
        print(f"grid --help / ray --help = {results['grid --help'] / results['ray --help (peer)']:.2f}x")


if __name__ == "__main__":
    main()
