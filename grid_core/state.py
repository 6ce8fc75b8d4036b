"""Where grid keeps its own files on this machine (tokens, records of what it started)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir(cluster_name: str | None = None) -> Path:
    """$GRID_STATE_DIR, else $XDG_STATE_HOME/grid, else ~/.local/state/grid; per cluster below it."""
    base = os.environ.get("GRID_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "grid"
    )
    path = Path(base) / cluster_name if cluster_name else Path(base)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
