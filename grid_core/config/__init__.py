"""The cluster config: one model that reads grid's TOML and the seed's YAML (docs/config.md).

- models.py   the attrs classes and the rules their values keep
- seed.py     the seed's spellings mapped onto grid's settings
- loading.py  structuring, the checks across fields, unstructuring, reading files
- cache.py    parsed configs kept in the state directory
- lookup.py   which file a command uses

Every name a caller needs is importable from here.
"""

from __future__ import annotations

from typing import Any

from grid_core.config.loading import load_file, parse_file, start_flag, structure, unstructure
from grid_core.config.lookup import FOUND_PATHS, embedded_default, find_config_path, load
from grid_core.config.models import *  # noqa: F403 (the models are this package's public names)
from grid_core.config.models import __all__ as _models


def __getattr__(name: str) -> Any:
    if name == "converter":  # built on first use: importing cattrs costs more than all else here
        from grid_core.config.loading import _converter

        return _converter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_models, "FOUND_PATHS", "embedded_default", "find_config_path", "load", "load_file",
           "parse_file", "start_flag", "structure", "unstructure"]
