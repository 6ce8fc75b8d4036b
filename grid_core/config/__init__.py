"""The cluster config: one model that reads grid's TOML and the seed's YAML (docs/config.md).

- models.py   the attrs classes and the rules their values keep
- seed.py     the seed's spellings mapped onto grid's settings
- loading.py  structuring, the checks across fields, unstructuring, reading files
- cache.py    parsed configs kept in the state directory
- lookup.py   which file a command uses

Every name a caller needs is importable from here. Each module loads when one of its names is
first asked for: a detached `grid run` by its shortcut (grid_core/shortcut.py) needs only
lookup's, and the models' twenty-five classes cost a command 8 ms.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_HOME = {**dict.fromkeys(("load_file", "parse_file", "start_flag", "structure", "unstructure"), "loading"),
         **dict.fromkeys(("FOUND_PATHS", "embedded_default", "find_config_path", "load"), "lookup")}


def __getattr__(name: str) -> Any:
    if name == "converter":  # built on first use: importing cattrs costs more than all else here
        from grid_core.config.loading import _converter

        return _converter()
    if name == "__all__":  # `import *`
        from grid_core.config.models import __all__ as models

        return [*models, *_HOME]
    module = importlib.import_module(f"{__name__}.{_HOME.get(name, 'models')}")
    if name.startswith("__") or not hasattr(module, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value  # the next lookup is a plain one
    return value


if TYPE_CHECKING:  # to type checkers, the names are the modules' own
    from grid_core.config.loading import load_file, parse_file, start_flag, structure, unstructure  # noqa: F401
    from grid_core.config.lookup import FOUND_PATHS, embedded_default, find_config_path, load  # noqa: F401
    from grid_core.config.models import *  # noqa: F403
