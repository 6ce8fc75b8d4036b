"""grid: SSH-reachable machines as one Ray cluster, with a responsive head."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("grid-core")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
