"""Where grid keeps its own files on this machine (tokens, records of what it started).

Every write goes through write_atomic: a crash, a full disk or an unwritable directory leaves
the old file or the new one, never half of one, and the failure names the path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from grid_core.errors import GridError


def state_base() -> str:
    """$GRID_STATE_DIR, else $XDG_STATE_HOME/grid, else ~/.local/state/grid (not made here; the
    plugin index is read from it on every start, so this module imports little)."""
    return os.environ.get("GRID_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "grid")


def state_dir(cluster_name: str | None = None) -> Path:
    """state_base(), made 0700; per cluster below it."""
    base = state_base()
    if cluster_name is not None and (cluster_name in ("", ".", "..") or "/" in cluster_name or "\0" in cluster_name):
        raise GridError(f"cluster name {cluster_name!r} cannot name a directory below {base}")
    path = Path(base) / cluster_name if cluster_name else Path(base)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise GridError(f"cannot use the state directory {path}: {exc.strerror or exc}; make it writable, "
                        "or point GRID_STATE_DIR at a directory you can write") from None
    return path


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace `path` with `text`: a temporary file in the same directory, fsynced, then renamed."""
    import tempfile  # here, not at the top: commands that only read state start faster

    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(tmp, path)
        tmp = None
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
    except OSError as exc:
        raise GridError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _holder(handle: IO[str], cluster_name: str) -> str:
    """Who holds the lock, as its holder wrote it. The holder writes just after it took the lock,
    so a run that came at that moment reads again for a little while before it gives up naming it."""
    import json
    import time

    for _ in range(20):
        handle.seek(0)
        try:
            holder = json.loads(handle.read() or "{}")
            since = time.strftime("%H:%M:%S", time.localtime(holder["since"]))
            return f"waiting for `grid cluster {holder['operation']}` (pid {holder['pid']}, since {since})"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.01)
    return f"waiting for another grid command on cluster {cluster_name}"


@contextlib.contextmanager
def operation_lock(cluster_name: str, operation: str, waiting: Callable[[str], None]) -> Iterator[None]:
    """Hold the cluster's lock for one start, stop or install; a second run waits its turn and is
    told, through `waiting`, who holds the lock and since when. The kernel drops the lock when its
    holder exits, so a killed run never leaves it behind."""
    import fcntl
    import json
    import time

    directory = state_dir(cluster_name)
    try:
        handle = open(directory / "operation.lock", "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
    except OSError as exc:
        raise GridError(f"cannot open the lock in {directory}: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting(_holder(handle, cluster_name))
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"operation": operation, "pid": os.getpid(), "since": time.time()}))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
