"""The seed project's user, word for word, against real test hosts.

The seed's own `config/my-cluster-enhanced.yaml`, unchanged, in a project folder with no
grid.toml; its three nodes reached by the names it uses (gpu-master, gpu1, gpu2, through the
user's ~/.ssh/config) as its users `ollie` and `ob` (accounts the test hosts have, not this
machine); and the seed's command lines as its docs write them, with no -c and no GRID_CONFIG.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, SEED_FILE
from tests.testbed import Testbed, require_testbed

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SEED_HOSTS = ("gpu-master", "gpu1", "gpu2")
FOUND = "grid: config config/my-cluster-enhanced.yaml (found in this folder)"


@pytest.fixture(scope="module")
def seed() -> Iterator[dict[str, Any]]:
    require_testbed()
    root = Path(tempfile.mkdtemp(prefix="gsd", dir="/tmp"))
    try:
        with Testbed(n_hosts=3, workdir=root / "bed", users=("ollie", "ob"), keep_visible=[REPO]) as tb:
            home = root / "home"
            (home / ".ssh").mkdir(parents=True, mode=0o700)
            known = home / ".ssh" / "known_hosts"
            lines, blocks = [], []
            for name, host in zip(SEED_HOSTS, tb.hosts, strict=True):
                key_type, key = host.host_key_path.with_suffix(".pub").read_text().split()[:2]
                lines.append(f"{host.ip} {key_type} {key}\n")  # checked by address, as OpenSSH does
                blocks.append(f"Host {name}\n    HostName {host.ip}\n    IdentityFile {tb.client_key}\n")
            known.write_text("".join(lines))
            (home / ".ssh" / "config").write_text("".join(blocks))
            project = root / "project"
            (project / "config").mkdir(parents=True)
            shutil.copyfile(SEED_FILE, project / "config" / "my-cluster-enhanced.yaml")
            env = {**os.environ, "HOME": str(home), "GRID_STATE_DIR": str(root / "state"),
                   "RAY_AUTH_MODE": "disabled", "COLUMNS": "160"}
            env.pop("GRID_CONFIG", None)
            c = {"tb": tb, "project": project, "env": env}
            try:
                yield c
            finally:
                seed_cli(c, "grid cluster stop", timeout=180)
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def seed_cli(c: dict[str, Any], line: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """One of the seed's command lines, run in its project folder as its docs write it."""
    argv = line.split()
    assert argv[0] == "grid"
    return subprocess.run([sys.executable, "-m", "grid_core", *argv[1:]], cwd=c["project"], env=c["env"],
                          capture_output=True, text=True, timeout=timeout)


def ok(c: dict[str, Any], line: str) -> subprocess.CompletedProcess[str]:
    result = seed_cli(c, line)
    assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
    assert result.stderr.count(FOUND) == 1, (line, result.stderr)  # said once, in one line
    assert "Traceback" not in result.stderr
    return result


def test_the_seed_s_commands_word_for_word(seed: dict[str, Any]) -> None:
    started = ok(seed, "grid cluster start")
    assert all(name in started.stdout for name in SEED_HOSTS), started.stdout
    status = json.loads(ok(seed, "grid cluster status --json").stdout)
    rows = {n["name"]: n for n in status["nodes"]}
    assert set(rows) == set(SEED_HOSTS) and all(r["alive"] for r in rows.values()), rows
    assert status["source"] == "config/my-cluster-enhanced.yaml" and status["cluster"] == "my-cluster"
    assert rows["gpu-master"]["role"] == "head"
    who = seed["tb"].host_exec("host2", ["sh", "-c", "ps -o user= -C raylet | sort -u"])
    assert who.stdout.split() == ["ob"], who  # gpu1 is ob's, as the seed says

    ok(seed, "grid cluster status")
    boosted = ok(seed, "grid boost request gpu-master cpu 2.0 --priority high")
    assert "gpu-master" in boosted.stdout and "high" in boosted.stdout, boosted.stdout
    assert "gpu-master" in ok(seed, "grid boost list").stdout

    ok(seed, "grid offload auto --enable")
    ok(seed, "grid offload auto --enable --threshold 70")
    ok(seed, "grid offload auto --enable --threshold cpu=80 --threshold memory=65 --threshold gpu=90")
    shown = json.loads(ok(seed, "grid offload auto --status --json").stdout)
    assert shown["enabled"] is True and (shown["thresholds"]["cpu"], shown["thresholds"]["memory"]) == (80, 65)
    assert "enabled" in ok(seed, "grid offload auto --status").stdout.lower()
    for line in ("grid offload watch", "grid offload watch --interval 2"):
        assert "gpu1" in watch(seed, line)
    ok(seed, "grid offload auto --disable")
    assert json.loads(ok(seed, "grid offload auto --status --json").stdout)["enabled"] is False


def watch(c: dict[str, Any], line: str, nodes: tuple[str, ...] = SEED_HOSTS, found: str = FOUND) -> str:
    """The dashboard in a terminal until it has drawn every node, then `q`: what it drew."""
    parent, child = pty.openpty()
    python = c.get("python", sys.executable)
    proc = subprocess.Popen([python, "-m", "grid_core", *line.split()[1:]], cwd=c["project"], stdin=child,
                            stdout=child, stderr=child, env={**c["env"], "LINES": "50"})
    os.close(child)
    screen = b""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(n.encode() in screen for n in nodes):
            if select.select([parent], [], [], 0.5)[0]:
                with contextlib.suppress(OSError):
                    screen += os.read(parent, 65536)
        os.write(parent, b"q")
        assert proc.wait(timeout=20) == 0, screen.decode(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(parent)
    text = screen.decode(errors="replace")
    assert found in text and all(n in text for n in nodes), text[-2000:]
    return text
