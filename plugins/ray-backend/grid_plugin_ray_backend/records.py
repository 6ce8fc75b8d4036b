"""What grid started, kept in the cluster's state directory (`ray.json`), so stop and jobs find it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

import attrs

from grid_core.errors import GridError
from grid_core.record import record
from grid_core.state import state_dir, write_atomic

FILE = "ray.json"
_lock = threading.Lock()


@record
class NodeRecord:
    """One node grid started: where its directory is, its address and its Python."""

    directory: str
    address: str
    python: str
    head: bool


_NODE_TYPES: dict[str, type[Any]] = {f.name: f.type for f in attrs.fields(attrs.resolve_types(NodeRecord)) if f.type}


@attrs.define
class Records:
    gcs_address: str | None = None
    nodes: dict[str, NodeRecord] = attrs.Factory(dict)


def path(cluster_name: str) -> str:
    return str(state_dir(cluster_name) / FILE)


def load(cluster_name: str) -> Records:
    """The records, or none when the file is missing; a file grid did not write is a clear error."""
    path = state_dir(cluster_name) / FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Records()
    except (OSError, UnicodeDecodeError) as exc:
        raise GridError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return _parse(json.loads(text))
    except ValueError as exc:  # json's errors are ValueErrors too
        raise GridError(f"{path} is not a record grid wrote ({exc}). If grid started nothing that still runs, "
                        "delete the file; otherwise stop Ray on each node (`ray stop`) first, then delete it and "
                        "run `grid cluster start`") from None


def _parse(data: Any) -> Records:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    _no_unknown(data, ("gcs_address", "nodes"), "")
    address, nodes = data.get("gcs_address"), data.get("nodes", {})
    if address is not None and not isinstance(address, str):
        raise ValueError("gcs_address is not a string")
    if not isinstance(nodes, dict):
        raise ValueError("nodes is not an object")
    parsed = {}
    for name, entry in nodes.items():
        if not isinstance(entry, dict):
            raise ValueError(f"nodes.{name} is not an object")
        _no_unknown(entry, _NODE_TYPES, f"nodes.{name}.")
        for key, wanted in _NODE_TYPES.items():
            if type(entry.get(key)) is not wanted:
                raise ValueError(f"nodes.{name}.{key} is missing or not a {wanted.__name__}")
        parsed[name] = NodeRecord(**entry)
    return Records(address, parsed)


def _no_unknown(data: dict[str, Any], known: Iterable[str], where: str) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(where + k for k in unknown)}")


def save(cluster_name: str, records: Records) -> None:
    """Write atomically, so that a crash leaves the old records or the new, never half."""
    path = state_dir(cluster_name) / FILE
    data: dict[str, Any] = {"gcs_address": records.gcs_address,
                            "nodes": {name: attrs.asdict(r) for name, r in sorted(records.nodes.items())}}
    with _lock:
        write_atomic(path, json.dumps(data, indent=2))
