"""Which config a command uses: -c, $GRID_CONFIG, ./grid.toml, the seed's path, else the default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: a command's shortcut (grid_core/shortcut.py) needs only the lookup
    from grid_core.config.models import ClusterConfig


def embedded_default() -> ClusterConfig:
    """A one-node cluster of this machine, through the `local` transport."""
    from grid_core.config.models import ClusterConfig, NodeConfig

    node = NodeConfig(name="local", host="localhost", role="head", transport="local")
    return ClusterConfig(name="local", nodes=[node])


# Where a config is looked for when none is given: grid's own file, then the seed project's default
# path, so the seed's commands (which carry no -c) act on the seed's cluster.
FOUND_PATHS = (Path("grid.toml"), Path("config") / "my-cluster-enhanced.yaml")


def find_config_path(explicit: str | None) -> tuple[Path | None, bool]:
    """The config file to use and whether it was found by lookup (not given by -c or $GRID_CONFIG).
    The order: -c/--config, $GRID_CONFIG, ./grid.toml, ./config/my-cluster-enhanced.yaml; None
    means the embedded default."""
    if explicit:
        return Path(explicit), False
    if os.environ.get("GRID_CONFIG"):
        return Path(os.environ["GRID_CONFIG"]), False
    return next((p for p in FOUND_PATHS if p.is_file()), None), True


def load(explicit: str | None = None) -> ClusterConfig:
    from grid_core.config.loading import load_file

    path, _found = find_config_path(explicit)
    return embedded_default() if path is None else load_file(path)
