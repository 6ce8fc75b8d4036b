"""`grid cluster enable` / `disable` through the CLI: the unit it writes is one systemd accepts
(systemd-analyze verify), and it tells systemd through systemctl, which a stub on PATH plays here
so that no test touches this machine's own systemd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import grid


def stubs(tmp_path: Path, systemctl_exit: int = 0, linger: str = "no") -> dict[str, str]:
    """A systemctl and a loginctl on PATH that log their arguments; the environment to run with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("systemctl", f'echo "$@" >> {tmp_path}/systemctl.log\nexit {systemctl_exit}\n'),
                       ("loginctl", f"echo {linger}\n")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}")
        (bin_dir / name).chmod(0o755)
    config = tmp_path / "lab cluster.toml"
    config.write_text('name = "lab"\n[[nodes]]\nname = "desk"\nhost = "localhost"\nrole = "head"\n')
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            "GRID_CONFIG": str(config)}


def test_enable_writes_a_unit_systemd_accepts_and_disable_removes_it(tmp_path: Path) -> None:
    env = stubs(tmp_path)
    enabled = grid("cluster", "enable", "--user", env=env)
    assert enabled.returncode == 0, enabled.stderr
    unit = tmp_path / "cfg" / "systemd" / "user" / "grid-lab.service"
    assert "enabled grid-lab.service" in enabled.stdout
    assert "loginctl enable-linger" in enabled.stderr  # the stub says this user does not linger
    assert (tmp_path / "systemctl.log").read_text() == "--user daemon-reload\n--user enable grid-lab.service\n"
    text = unit.read_text()
    assert f"ExecStart={sys.executable} -m grid_core cluster start\n" in text
    assert f'Environment="GRID_CONFIG={tmp_path}/lab cluster.toml"' in text
    assert "Restart=on-failure\nRestartSec=30\n" in text and "WantedBy=default.target" in text
    if shutil.which("systemd-analyze") is None and os.environ.get("CI") != "true":
        pytest.skip("systemd-analyze is not installed here (.ci/run installs it)")
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stderr

    disabled = grid("cluster", "disable", "--user", env=env)
    assert disabled.returncode == 0 and "no longer starts at boot" in disabled.stdout
    assert not unit.exists()
    assert (tmp_path / "systemctl.log").read_text().splitlines()[-2:] == ["--user disable grid-lab.service",
                                                                          "--user daemon-reload"]
    again = grid("cluster", "disable", "--user", env=env)
    assert again.returncode == 0 and "does not start at boot" in again.stdout


def test_systemd_that_cannot_enable_it_is_one_clear_error(tmp_path: Path) -> None:
    enabled = grid("cluster", "enable", "--user", env=stubs(tmp_path, systemctl_exit=1))
    assert enabled.returncode == 1 and "Traceback" not in enabled.stderr
    assert "error: the unit is written, but systemd did not enable it" in enabled.stderr
    assert "systemctl --user enable grid-lab.service" in enabled.stderr
