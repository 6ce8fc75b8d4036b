"""grid: SSH-reachable machines as one Ray cluster, with a responsive head."""

from typing import Any


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
