"""Shared fixtures. No test touches the real user's home, config or state directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# The seed project's own config, unchanged, where the seed keeps it (config/ of its project folder).
SEED_FILE = REPO / "examples" / "seed-project" / "config" / "my-cluster-enhanced.yaml"


@pytest.fixture(scope="session", autouse=True)
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """XDG_RUNTIME_DIR for the session, set before any module's fixture runs a command: the SSH
    keepers' sockets (keeper.py). Those still running at the end are told to stop, so none
    outlives the tests by its idle time, and none lands in the user's own runtime directory."""
    import socket

    path = tmp_path_factory.mktemp("runtime")
    path.chmod(0o700)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_RUNTIME_DIR", str(path))
        yield path
    for sock_path in (path / "grid").glob("*.sock"):
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(sock_path))
                sock.sendall(b'{"op": "stop"}\n')
                sock.recv(1024)
            except OSError:
                pass


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME, XDG dirs (XDG_RUNTIME_DIR is the session's) and grid's state dir point at a fresh
    temporary directory."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local/state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GRID_STATE_DIR", str(home / "grid-state"))
    for name in ("GRID_CONFIG", "GRID_DISABLE_PLUGINS", "GRID_NO_PLUGINS", "GRID_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return home


def takes_ctrl_c() -> None:
    """A child's preexec_fn for a test that sends it SIGINT: run from a shell with `&` (or nohup),
    the suite inherits SIGINT ignored, and so would the child, which would then never stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def grid(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    python: str = sys.executable,
) -> subprocess.CompletedProcess[str]:
    """Run the real `grid` command (as `python -m grid_core`) in a subprocess."""
    return subprocess.run(
        [python, "-m", "grid_core", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def linked_venv(venv: Path, leave_out: str | None = None) -> Path:
    """A venv whose site-packages links every entry of the test environment's (but those named
    like `leave_out`): the same grid and Ray in a second environment, made in a second. What pip
    installs into it stays there. Its python."""
    import sysconfig

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if leave_out is None or leave_out not in entry.name:
            (target / entry.name).symlink_to(entry)
    return python


def grid_json(*args: str, **kwargs: object) -> object:
    if "--json" not in args:
        args = (*args, "--json")
    result = grid(*args, **kwargs)  # type: ignore[arg-type]
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def local_pair() -> Iterator[dict[str, Any]]:
    """A two-node grid cluster of this machine (tests/local_pair.py), shared by the whole session."""
    from tests.local_pair import start_pair

    yield from start_pair()
