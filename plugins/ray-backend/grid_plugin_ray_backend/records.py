"""What grid started, kept in the cluster's state directory (`ray.json`), so stop and jobs find it."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import attrs

from grid_core.state import state_dir

FILE = "ray.json"
_lock = threading.Lock()


@attrs.frozen
class NodeRecord:
    """One node grid started: where its directory is, its address and its Python."""

    directory: str
    address: str
    python: str
    head: bool


@attrs.define
class Records:
    gcs_address: str | None = None
    nodes: dict[str, NodeRecord] = attrs.Factory(dict)


def load(cluster_name: str) -> Records:
    path = state_dir(cluster_name) / FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return Records()
    nodes = {name: NodeRecord(**entry) for name, entry in data.get("nodes", {}).items()}
    return Records(data.get("gcs_address"), nodes)


def save(cluster_name: str, records: Records) -> None:
    """Write atomically, so that a crash leaves the old records or the new, never half."""
    path = state_dir(cluster_name) / FILE
    data: dict[str, Any] = {"gcs_address": records.gcs_address,
                            "nodes": {name: attrs.asdict(r) for name, r in sorted(records.nodes.items())}}
    with _lock:
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
