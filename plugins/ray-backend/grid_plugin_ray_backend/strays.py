"""What on this machine would catch a Ray program meant for grid's cluster (`grid doctor`).

A script that runs `ray.init()` without `RAY_ADDRESS` connects to the address in Ray's default
`ray_current_cluster` file, or else starts a private instance; with `RAY_AUTH_MODE` unset it
authenticates with `~/.ray/auth_token` if there is one (Ray 2.60).
"""

from __future__ import annotations

import os
from pathlib import Path

from grid_core.state import state_dir

ENV_HINT = 'eval "$(grid cluster env)"'


def default_address_file() -> Path:
    """Ray's record of the last `ray start` here, in its default temp dir (as Ray finds it)."""
    return Path(os.environ.get("RAY_TMPDIR") or "/tmp", "ray", "ray_current_cluster")


def stray_warnings(cluster: str, own_dirs: list[str], gcs_address: str | None) -> list[str]:
    """One line per thing that would send a plain `ray.init()` or `ray status` somewhere else."""
    out = []
    for pid, session in _own_gcs_servers():
        if not any(session.startswith(d.rstrip("/") + "/") for d in own_dirs):
            out.append(f"a Ray instance grid did not start runs here (gcs_server pid {pid}, "
                       f"{session or 'no session dir'}): a plain ray.init() may join it; run {ENV_HINT} first")
    address_file = default_address_file()
    try:
        recorded = address_file.read_text().strip()
    except OSError:
        recorded = ""
    if recorded and recorded != gcs_address:
        out.append(f"{address_file} names {recorded}, not cluster {cluster}'s {gcs_address or '(not running)'}: "
                   f"a plain ray.init() connects there; run {ENV_HINT} first")
    default_token = Path.home() / ".ray" / "auth_token"
    ours = state_dir(cluster) / "auth_token"
    try:
        differs = default_token.read_text().strip() != ours.read_text().strip()
    except OSError:
        differs = default_token.exists()  # ours is not made yet, or one of them is unreadable
    if differs:
        out.append(f"{default_token} differs from cluster {cluster}'s token: Ray's tools use it when "
                   f"RAY_AUTH_MODE is unset, and cluster {cluster} refuses it; run {ENV_HINT} first")
    return out


def _own_gcs_servers() -> list[tuple[int, str]]:
    """(pid, its session dir) for each gcs_server of this user on this machine."""
    import psutil

    uid, out = os.getuid(), []
    for proc in psutil.process_iter(["name", "cmdline", "uids"]):
        info = proc.info
        if info["name"] != "gcs_server" or not info["uids"] or info["uids"].real != uid:
            continue
        args = info["cmdline"] or []
        session = next((a.split("=", 1)[1] for a in args if a.startswith(("--session-dir=", "--log_dir="))), "")
        out.append((proc.pid, session))
    return out
