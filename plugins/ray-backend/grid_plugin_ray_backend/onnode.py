"""Code that runs on a node, sent there as source (`python -c`), so it needs only the standard library.

    python -c SOURCE probe NODE_DIR [DIST ...]   versions, plugins, addresses and grid's Ray processes there
    python -c SOURCE stop NODE_DIR               stop grid's Ray processes there, by PID
    python -c SOURCE locked LOCK_FILE ARGV...    run ARGV holding a lock (installs into a shared venv)

grid's Ray processes on a node are those whose command line names Ray's temp dir inside NODE_DIR
(gcs_server, raylet, monitor, log_monitor, dashboard), plus all their descendants (Ray's workers,
whose titles Ray rewrites). Only processes in this script's own PID and mount namespaces count, so
a node never touches another Ray cluster on the same machine, nor one in a container or test host.
This is why grid never runs `ray stop`, which ends every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _ns(pid: int | str, kind: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return ""


def _table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) for the processes in this script's PID and mount namespaces."""
    own = (_ns("self", "pid"), _ns("self", "mnt"))
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat").decode(errors="replace")
        if not stat or (_ns(entry, "pid"), _ns(entry, "mnt")) != own:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        argv = _read(f"/proc/{entry}/cmdline").decode(errors="replace").split("\0")
        table[int(entry)] = (ppid, argv)
    return table


def _ancestors(table: dict[int, tuple[int, list[str]]]) -> set[int]:
    out, pid = set(), os.getpid()
    while pid in table and pid not in out:
        out.add(pid)
        pid = table[pid][0]
    return out


def grid_processes(node_dir: str) -> tuple[dict[int, list[str]], list[str]]:
    """grid's Ray processes under node_dir with their argv, and the node ids of its raylets."""
    marker = re.compile(re.escape(os.path.join(node_dir, "ray")) + r"(/|$)")
    table = _table()
    skip = _ancestors(table)
    roots = {pid for pid, (_, argv) in table.items()
             if pid not in skip and any(a.startswith("--") and marker.search(a) for a in argv)}
    found, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in found and pid not in skip:
                found.add(pid)
                frontier.append(pid)
    node_ids = []
    for pid in roots:
        argv = table[pid][1]
        if os.path.basename(argv[0]) == "raylet":
            node_ids += [a.split("=", 1)[1] for a in argv if a.startswith("--node_id=")]
    return {pid: table[pid][1] for pid in found}, node_ids


def gpus() -> list[list[object]]:
    """[index, name, total MiB, uuid] per GPU from nvidia-smi; none where it is missing or fails."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        query = ["nvidia-smi", "--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found: list[list[object]] = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit() and parts[2].isdigit():
            found.append([int(parts[0]), parts[1], int(parts[2]), parts[3]])
    return found


def probe(node_dir: str, dists: list[str]) -> dict[str, object]:
    import platform
    import socket
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    # Every distribution with a grid plugin, none imported (grid_core.plugin_set compares them).
    plugins = {ep.dist.name: ep.dist.version for ep in metadata.entry_points(group="grid") if ep.dist is not None}
    processes, node_ids = grid_processes(node_dir)
    ssh = os.environ.get("SSH_CONNECTION", "").split()
    return {
        "python": platform.python_version(),
        "executable": sys.executable,
        "hostname": socket.gethostname(),
        "home": os.path.expanduser("~"),
        "ssh_server_ip": ssh[2] if len(ssh) == 4 else None,
        "versions": versions,
        "plugins": plugins,
        "pids": sorted(processes),
        "raylets": node_ids,
        "gpus": gpus(),
    }


def _alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _wait(pids: list[int], seconds: float) -> list[int]:
    """The pids still alive after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    left = [p for p in pids if _alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if _alive(p)]
    return left


def stop(node_dir: str) -> dict[str, object]:
    """SIGTERM the raylets first (so the node leaves the cluster cleanly), then the rest; SIGKILL
    what is left. A GCS that got SIGTERM can hang in its shutdown, hence the short grace."""
    processes, _ = grid_processes(node_dir)
    pids = sorted(processes)
    raylets = [p for p in pids if os.path.basename(processes[p][0]) == "raylet"]
    _signal(raylets, signal.SIGTERM)
    _wait(raylets, 5.0)
    _signal([p for p in pids if p not in raylets], signal.SIGTERM)
    killed = _wait(pids, 3.0)
    _signal(killed, signal.SIGKILL)
    left = _wait(killed, 5.0)
    return {"stopped": pids, "killed": killed, "left": left}


def locked(lock_path: str, argv: list[str]) -> int:
    """Run argv holding an exclusive lock on lock_path: nodes that share one home (NFS) and so one
    venv install into it one at a time, and the later ones find it done."""
    import fcntl
    import subprocess

    os.makedirs(os.path.dirname(lock_path) or ".", exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        return subprocess.call(argv)


def main(argv: list[str]) -> int:
    command, node_dir, rest = argv[0], argv[1], argv[2:]
    if command == "locked":
        return locked(node_dir, rest)
    if command == "probe":
        print(json.dumps(probe(node_dir, rest)))
    elif command == "stop":
        result = stop(node_dir)
        print(json.dumps(result))
        return 1 if result["left"] else 0
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
