"""grid: SSH-reachable machines as one Ray cluster, with a responsive head."""

from typing import Any

# The plugin API: the hooks of grid_core/hookspecs.py and the records of grid_core.types that they
# yield and take. A release that adds to it keeps the number; one that changes or removes a part
# raises it, and grid-core's own major version with it. Every grid-core before 1.0 carries API 1,
# so a plugin written for it declares `grid-core>=0.1,<1`; one whose declared requirement
# excludes the installed core is listed as incompatible and never imported (docs/plugins.md).
PLUGIN_API = 1


def __getattr__(name: str) -> Any:
    # Read on first use: importlib.metadata costs more than click, and `grid --help` needs neither.
    if name != "__version__":
        raise AttributeError(f"module 'grid_core' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("grid-core")
    except PackageNotFoundError:  # running from a source tree that was never installed
        value = "0+unknown"
    globals()["__version__"] = value
    return value
