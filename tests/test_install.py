"""`grid cluster install` on a lab's first day: from a venv made as the README's users make one
(`python3 -m venv`, then `pip install -e` of core and plugins, no test extras: setuptools 65 there),
onto two test hosts whose home is one directory (as with NFS), so both see one venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.test_ray_cluster import WHEELHOUSE, Env, fill_wheelhouse
from tests.testbed import Testbed, require_testbed

pytestmark = [pytest.mark.realhost, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
PLUGINS = ("ssh-paramiko", "ray-backend", "threshold-offload", "memory-pool")


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only grid installed, editable, its dependencies from the wheelhouse."""
    venv = tmp_path_factory.mktemp("plain") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    sources = [str(REPO), *(str(REPO / "plugins" / p) for p in PLUGINS)]
    made = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile",
                           "--disable-pip-version-check", "--find-links", str(fill_wheelhouse()),
                           *(a for s in sources for a in ("-e", s))], capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    return venv


@pytest.fixture(scope="module")
def shared_home_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Testbed, Path, Path]]:
    require_testbed()
    root = tmp_path_factory.mktemp("install")
    # Under the home the hosts share (TESTBED.md section 3a), so both hosts see this one venv.
    shared = Path(tempfile.mkdtemp(prefix="grid-shared-home-", dir=Path.home()))
    tb = Testbed(n_hosts=2, workdir=root / "tb")
    try:
        config = tb.write_grid_config(root / "grid.toml", name="nfs", backend={"venv": str(shared / "venv")},
                                      ssh={"connect_timeout": 3.0})
        yield tb, root, config
    finally:
        tb.close()
        shutil.rmtree(shared, ignore_errors=True)


def test_a_plain_venv_installs_onto_hosts_that_share_one_home(plain_venv: Path,
                                                            shared_home_bed: tuple[Testbed, Path, Path]) -> None:
    _, root, config = shared_home_bed
    version = "import setuptools; print(setuptools.__version__)"
    setuptools = subprocess.run([str(plain_venv / "bin" / "python"), "-c", version], capture_output=True, text=True)
    assert setuptools.stdout.split(".")[0].isdigit() and int(setuptools.stdout.split(".")[0]) < 77  # the trap

    env = Env(root, config)
    grid = [str(plain_venv / "bin" / "grid")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*grid, *args], capture_output=True, text=True, timeout=900,
                              env={**os.environ, **env.vars})

    installed = run("cluster", "install", "--wheelhouse", str(WHEELHOUSE), "--json")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    actions = {n["name"]: n["action"] for n in json.loads(installed.stdout)["nodes"]}
    assert set(actions.values()) <= {"installed", "up to date"} and len(actions) == 2, actions
    again: Any = json.loads(run("cluster", "install", "--wheelhouse", str(WHEELHOUSE), "--json").stdout)
    assert {n["action"] for n in again["nodes"]} == {"up to date"}
    try:
        started = run("cluster", "start", "--install", "--wheelhouse", str(WHEELHOUSE), "--json")
        assert started.returncode == 0, started.stdout + started.stderr
        assert {n["action"] for n in json.loads(started.stdout)["nodes"]} == {"started"}
        for host in ("host1", "host2"):
            ran = run("run", "--node", host, "--", "hostname")
            assert (ran.returncode, ran.stdout.strip()) == (0, host), ran.stderr
    finally:
        run("cluster", "stop")
