"""The README's quick start is true: its two commands are the Makefile's, CI runs the second, and
the first (grid's main job on the embedded default) works, here with its own home and state."""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import REPO, grid


def quick_start() -> list[str]:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start.*?```sh\n(.*?)```", readme, re.S)
    assert block, "README has a Quick start with a sh block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_two_commands_and_ci_runs_the_test_one() -> None:
    assert quick_start() == ["make demo", "make test"]
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_make_demo_runs_the_main_job() -> None:
    root = Path(tempfile.mkdtemp(prefix="grd", dir="/tmp"))
    env = {**os.environ, "HOME": str(root / "home"), "GRID_STATE_DIR": str(root / "state"),
           "RAY_TMPDIR": str(root / "rt"), "RAY_AUTH_MODE": "disabled"}
    env.pop("GRID_CONFIG", None)
    for key in ("HOME", "RAY_TMPDIR"):
        Path(env[key]).mkdir(parents=True)
    venv = Path(sys.prefix)
    try:
        demo = subprocess.run(["make", "-C", str(REPO), "demo", f"VENV={venv}"], capture_output=True, text=True,
                              env=env, timeout=300)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "job ran on" in demo.stdout and "grid cluster stop" in demo.stdout
    finally:
        stopped = grid("cluster", "stop", env={k: env[k] for k in ("HOME", "GRID_STATE_DIR", "RAY_TMPDIR")})
        subprocess.run(["rm", "-rf", str(root)], check=False)
    assert stopped.returncode == 0, stopped.stderr


def test_make_install_system_puts_grid_with_every_plugin_on_path(tmp_path: Path) -> None:
    """The README's second form (PREFIX=DIR): a venv of its own under DIR/share/grid, the link in
    DIR/bin, and grid there has core and every plugin, none failed."""
    readme = (REPO / "README.md").read_text()
    assert "make install-system PREFIX=/opt/grid" in readme
    prefix = tmp_path / "opt-grid"
    cache = Path(pwd.getpwuid(os.getuid()).pw_dir, ".cache", "pip")  # the user's, not the test's empty home's
    quick = {"PIP_CACHE_DIR": str(cache), "PIP_NO_COMPILE": "1"}  # bytecode is not what this test is about
    made = subprocess.run(["make", "-C", str(REPO), "install-system", f"PREFIX={prefix}"], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **quick})
    assert made.returncode == 0, made.stdout + made.stderr
    linked = prefix / "bin" / "grid"
    assert linked.resolve().parent == (prefix / "share" / "grid" / "venv" / "bin").resolve()
    version = subprocess.run([str(linked), "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.split()[::2] == ["grid-core", "grid-plugin-memory-pool", "grid-plugin-ray-backend",
                                           "grid-plugin-ssh-paramiko", "grid-plugin-threshold-offload"]
    listed = subprocess.run([str(linked), "plugins", "list", "--json"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "failed" not in listed.stdout and "memory-pool" in listed.stdout
