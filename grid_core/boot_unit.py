"""`grid cluster enable`: a systemd unit that runs `grid cluster start` when this machine boots.

- A system unit (/etc/systemd/system) when grid runs as root, else a user unit
  (~/.config/systemd/user); `--user` asks for a user unit as root too. A user unit runs at boot
  only where the user lingers (`loginctl enable-linger USER`): `enable` says so when they do not.
- It runs the interpreter and the config this command ran with (GRID_CONFIG, --config, or the
  embedded default), with the same state directory, so the cluster it starts is this one.
- `Type=oneshot` with `Restart=on-failure` and RestartSec=30: a start that fails (a worker not
  up yet, the network late) is tried again, never in a tight loop (SkyPilot#8145), and never given
  up on (`StartLimitIntervalSec=0`). A start that succeeded leaves the cluster to the grid service,
  which brings workers back as they boot (rejoin.py in the Ray backend).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from grid_core.errors import GridError

RESTART_SECONDS = 30
CARRIED = ("GRID_STATE_DIR", "XDG_STATE_HOME", "XDG_RUNTIME_DIR")  # where this cluster's state is


def unit_name(cluster_name: str) -> str:
    return f"grid-{cluster_name}.service"


def system_wide(user: bool) -> bool:
    return os.geteuid() == 0 and not user


def unit_directory(user: bool) -> Path:
    if system_wide(user):
        return Path("/etc/systemd/system")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config, "systemd", "user")


def unit_text(cluster_name: str, config_path: str | None, user: bool) -> str:
    """The unit: `grid cluster start` with this interpreter, this config and this state directory."""
    argv = [sys.executable, "-m", "grid_core", "cluster", "start"]
    env = {"HOME": os.path.expanduser("~")}
    if config_path:
        env["GRID_CONFIG"] = os.path.abspath(config_path)
    env |= {name: os.environ[name] for name in CARRIED if os.environ.get(name)}
    if not system_wide(user):
        env.pop("XDG_RUNTIME_DIR", None)  # the user manager sets its own
    lines = [
        "[Unit]",
        f"Description=grid cluster {cluster_name}: grid cluster start at boot (grid cluster disable removes this)",
        "Wants=network-online.target",
        "After=network-online.target",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={shlex.join(argv)}",
        *(f'Environment="{k}={_escaped(v)}"' for k, v in env.items()),
        "Restart=on-failure",
        f"RestartSec={RESTART_SECONDS}",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system_wide(user) else 'default.target'}",
        "",
    ]
    return "\n".join(lines)


def _escaped(value: str) -> str:
    if any(c in value for c in '"\\\n%$'):
        raise GridError(f"cannot put {value!r} into a systemd unit: it holds a quote, backslash, newline, % or $")
    return value


def systemctl(user: bool, *args: str) -> str | None:
    """Run systemctl (--user unless system-wide); None on success, else why it failed."""
    if shutil.which("systemctl") is None:
        return "systemctl is not on PATH (is this a systemd machine?)"
    argv = ["systemctl", *([] if system_wide(user) else ["--user"]), *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{shlex.join(argv)}: {exc}"
    if done.returncode != 0:
        return f"{shlex.join(argv)}: {(done.stderr or done.stdout).strip() or f'exit status {done.returncode}'}"
    return None


def lingers() -> bool | None:
    """Whether this user's units run without a login (at boot); None where loginctl cannot say."""
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    if shutil.which("loginctl") is None:
        return None
    try:
        done = subprocess.run(["loginctl", "show-user", user, "--property=Linger", "--value"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return Path("/var/lib/systemd/linger", user).exists() or None
    return done.stdout.strip() == "yes"
