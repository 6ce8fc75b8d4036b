"""Commands that only ask the service, without the config's classes or the plugins: a kept shortcut.

The usual path of a command loads the config (twenty-five attrs classes), pluggy and every
plugin's module: about 45 ms of a submission's 130 (issue 28 asks for at most 2.0x `grid --help`).
Once such a command has reached the service the usual way, the backend says how to reach it
again with nothing loaded (Backend.shortcut), and this module keeps that, with the config's text
and the job defaults it gives, in grid's state directory (0700). The next such command with the
same config uses it while every file it was made from is as it was. Anything else (no shortcut,
an edited config, a stopped cluster, a socket that refuses) takes the usual path, which keeps a
new one; so does a submission whose answer was lost, under the same job id, which the service
knows (it queues a job id once).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from grid_core.state import state_base

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig
    from grid_core.types import JobDefaults, Shortcut, ShortcutClient, StatusBasis, StreamRoute

FORMAT = 2  # of the kept file; a file of another is ignored (and replaced)
HELLO_TIMEOUT = 10.0  # for the route's first answer (a keeper's SSH channel to the head)
CODE = tuple(os.path.join(os.path.dirname(__file__), name) for name in ("shortcut.py", "types/jobs.py",
                                                                         "types/backend.py"))


class Kept(NamedTuple):
    shortcut: Shortcut
    defaults: JobDefaults
    basis: StatusBasis
    config: str  # the config's path as found; "" for the embedded default
    found: bool  # found by lookup (in this folder), which a command says


class Unusable(Exception):
    """The shortcut cannot reach the service: the usual path tries, and keeps a new one."""


def stamp(path: str) -> tuple[str, int, int, int]:
    """What a shortcut checks of a file: as Stamp in grid_core/types/backend.py."""
    try:
        info = os.stat(path)
    except OSError:
        return path, -1, -1, -1
    return path, info.st_mtime_ns, info.st_size, info.st_ino


def _file(config_path: str) -> Path:
    return Path(state_base()) / "shortcuts" / f"{zlib.crc32(config_path.encode()):08x}.json"


def _config(explicit: str | None) -> tuple[str, str, str, bool]:
    """The config's path as found and made absolute ("" for the embedded default), its text, and
    whether it was found by lookup; OSError where it cannot be read (the usual path says why)."""
    from grid_core.config.lookup import find_config_path

    path, found = find_config_path(explicit)
    if path is None:
        return "", "", "", found
    with open(path, "rb") as f:
        return str(path), os.path.abspath(path), f.read().decode("utf-8", "surrogateescape"), found


def find(explicit: str | None) -> Kept | None:
    """The shortcut kept for the config this command uses, with its job defaults; None unless
    every file it was made from is as it was."""
    try:
        shown, path, text, found = _config(explicit)
        with open(_file(path), encoding="utf-8") as f:
            kept = json.load(f)
        if kept["format"] != FORMAT or kept["config"] != path or kept["text"] != text:
            return None
        from grid_core.types import JobDefaults, Shortcut, StatusBasis, wire

        shortcut = wire().structure(kept["shortcut"], Shortcut)
        defaults = wire().structure(kept["defaults"], JobDefaults)
        basis = wire().structure(kept["status"], StatusBasis)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none kept, or not one this grid wrote
        return None
    checks = [*kept["checks"], *shortcut.checks, *shortcut.route.checks]
    if any(stamp(check[0]) != tuple(check) for check in checks):
        return None
    return Kept(shortcut, defaults, basis, shown, found)


def keep(config: ClusterConfig, explicit: str | None, shortcut: Shortcut) -> None:
    """Keep the backend's shortcut for the next command with this config, with what that command
    takes from the config and from this machine's plugins; a failure only costs it speed."""
    from grid_core.errors import GridError
    from grid_core.plugin_set import Here
    from grid_core.state import state_dir, write_atomic
    from grid_core.types import JobDefaults, wire

    with contextlib.suppress(OSError, GridError):
        _shown, path, text, _found = _config(explicit)
        # The folders Python finds distributions in (not the first: the script's own, or the working
        # directory): an install or an upgrade changes one, and with it the plugin set that
        # `cluster status` compares with the service's.
        checks = [stamp(p) for p in (path, *CODE, *filter(os.path.isdir, sys.path[1:])) if p]
        kept = {"format": FORMAT, "config": path, "text": text, "checks": checks,
                "defaults": wire().unstructure(JobDefaults.of(config)),
                "status": wire().unstructure(Here().basis(config)), "shortcut": wire().unstructure(shortcut)}
        target = _file(path)
        state_dir()
        target.parent.mkdir(mode=0o700, exist_ok=True)
        write_atomic(target, json.dumps(kept))


def forget(explicit: str | None) -> None:
    """The shortcut for this config is not to be used again (it failed)."""
    with contextlib.suppress(OSError):
        os.unlink(_file(_config(explicit)[1]))


def client(shortcut: Shortcut) -> ShortcutClient:
    """The backend's client by the shortcut; Unusable where its plugin is gone or changed."""
    import importlib

    module, _, name = shortcut.client.partition(":")
    try:
        made: ShortcutClient = getattr(importlib.import_module(module), name)(shortcut)
    except (ImportError, AttributeError, TypeError):
        raise Unusable(shortcut.client) from None
    return made


def connect(route: StreamRoute) -> socket.socket:
    """A stream to the service by the route; Unusable where it cannot be made."""
    if route.private:
        import stat

        try:
            info = os.lstat(os.path.dirname(route.socket))
        except OSError as exc:
            raise Unusable(str(exc)) from None
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise Unusable(f"{os.path.dirname(route.socket)} is not this user's alone")  # the usual path says why
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(HELLO_TIMEOUT)
        sock.connect(route.socket)
        if route.hello:
            sock.sendall(route.hello.encode())
            if _line(sock) != json.loads(route.ready):
                raise Unusable(f"{route.socket} did not open the stream")
        sock.settimeout(None)
    except (OSError, ValueError) as exc:
        sock.close()
        raise Unusable(str(exc)) from None
    except Unusable:
        sock.close()
        raise
    return sock


def _line(sock: socket.socket) -> Any:
    """One JSON line, read a byte at a time: what follows it is the stream's, not ours."""
    data = bytearray()
    while not data.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            raise Unusable("the route closed before answering")
        data += byte
    return json.loads(data)
