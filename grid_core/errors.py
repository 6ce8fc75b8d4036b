"""The errors grid expects. The CLI prints their message on one line and exits non-zero."""

from __future__ import annotations


class GridError(Exception):
    """An expected failure: bad input, an unreachable node, a missing cluster."""

    exit_code = 1


class ConfigError(GridError):
    """A config file that cannot be used. The message names the file and each bad value."""

    exit_code = 2


class PluginError(GridError):
    """A plugin failed, or two plugins clash. The message names the plugins involved."""
