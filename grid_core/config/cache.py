"""Parsed configs, kept in grid's state directory (0700), one file per config path.

Checking a config costs a command 20 to 30 ms (cattrs generates code for twenty classes); reading
it back costs well under one. An entry counts only for the same bytes, path, Python and this
package's own files (a new grid brings new ones); a config with problems is never kept. The entry
holds its whole key, so the file name needs no strong hash (hashlib costs a command 2 ms to import).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from grid_core.config.models import ClusterConfig

HERE = os.path.dirname(__file__)


def file_for(path: Path) -> Path:
    import zlib

    from grid_core.state import state_base

    name = f"{zlib.crc32(os.path.abspath(path).encode()):08x}"
    return Path(state_base()) / "config-cache" / f"{name}.pickle"


def key(path: Path, raw: bytes) -> tuple[bytes, str]:
    import sys

    # The package's own files stand for grid's version, which costs 12 ms to read.
    code = "\0".join(f"{s.st_ino}:{s.st_mtime_ns}:{s.st_size}"
                     for s in (os.stat(os.path.join(HERE, name)) for name in sorted(os.listdir(HERE))
                               if name.endswith(".py")))
    return raw, f"{os.path.abspath(path)}\0{path}\0{sys.version}\0{code}"


def get(path: Path, wanted: tuple[bytes, str]) -> ClusterConfig | None:
    import pickle

    try:
        with open(file_for(path), "rb") as f:
            kept_key, config = pickle.load(f)
    except Exception:  # missing, unreadable, or written by another version: parse the file
        return None
    return config if kept_key == wanted and isinstance(config, ClusterConfig) else None


def keep(path: Path, entry_key: tuple[bytes, str], config: ClusterConfig) -> None:
    import pickle
    import tempfile

    from grid_core.errors import GridError
    from grid_core.state import state_dir

    target = file_for(path)
    with contextlib.suppress(OSError, GridError, pickle.PicklingError):  # no cache is only slower
        state_dir()  # grid's own directory, 0700, made first
        target.parent.mkdir(exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump((entry_key, config), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


