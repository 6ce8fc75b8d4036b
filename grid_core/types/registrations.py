"""What plugins yield from their hooks: frozen records with a validated lower-case `name`, a
one-line `summary`, and a factory (or import path) that builds the working object only when it
is used, so that listing plugins never imports a plugin's heavy dependencies."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from grid_core.record import record

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig, NodeConfig
    from grid_core.types.backend import Backend
    from grid_core.types.interfaces import MetricsSource, Scheduler, Transport


__all__ = (
    "NAME_PATTERN",
    "GridBackend",
    "GridCommand",
    "GridMetricsSource",
    "GridOffloadPolicy",
    "GridScheduler",
    "GridServiceOp",
    "GridTransport",
)


NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]*$")


def _valid_name(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValueError(f"registration name {value!r} must be lower-case: [a-z][a-z0-9_.-]*")


def _one_line(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or "\n" in value:
        raise ValueError("summary must be a single line of text")


@record
class GridTransport:
    """A way to run commands and copy files on a node. `factory(node, cluster)` -> Transport."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[NodeConfig, ClusterConfig], Transport]


@record
class GridBackend:
    """A compute engine's lifecycle on the nodes. `factory(config)` -> Backend."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[ClusterConfig], Backend]


@record
class GridScheduler:
    """Chooses a node for work. `factory()` -> Scheduler."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[], Scheduler]


@record
class GridOffloadPolicy:
    """Decides from metrics whether the head should shed work. `factory(settings)` -> policy."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[Mapping[str, Any]], Any]


@record
class GridMetricsSource:
    """Live readings for nodes. `factory()` -> MetricsSource."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[], MetricsSource]


@record
class GridCommand:
    """A CLI command or group, imported from `import_path` ("pkg.module:attr") only when run."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    import_path: str = attrs.field(validator=attrs.validators.matches_re(r"^[\w.]+:[\w.]+$"))


@record
class GridServiceOp:
    """A request the grid service on the head answers for a plugin. `import_path` ("pkg.module:attr")
    names its handler, imported in the service's process only when asked:
    `handler(client, config, **params) -> int` (an exit status), where `client.frame(kind, value)`
    sends an answer frame, `client.read_data()` reads the bytes the request carries and
    `client.send_data(data)` sends bytes back, and `config` is the ClusterConfig in force."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    import_path: str = attrs.field(validator=attrs.validators.matches_re(r"^[\w.]+:[\w.]+$"))
