"""Nodes come back by themselves: the grid service on the head starts a worker again once it has
left the Ray cluster (a reboot, a crash, a partition Ray gave up on) and its sshd answers, as
Ray's autoscaler does for `ray up` clusters (`recover_if_needed`).

- How the head reaches a worker: by SSH, as the CLI does, with the node's own config (its
  `ssh_key_path` and `known_hosts` must be there on the head; the key is never copied there).
  `grid cluster start` tells the service each node's grid directory and Python, as it named them,
  so a worker started again by the head is the one `grid cluster stop` stops, with the head's
  token; and it says which workers the head cannot reach (`Rejoiner.learn`).
- It looks every LOOK_SECONDS. A worker out of the cluster whose sshd does not answer is looked at
  again then; one whose start fails is tried again after BACKOFF (5 s doubling to 60 s), for ever:
  a node is never given up for good (ray#29127).
- What it did is an event (`rejoin`, `rejoin-failed`), and where a worker stands is in
  `cluster status` (its `engine_error`). Nothing starts while `cluster stop` drains the cluster.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import attrs

LOOK_SECONDS = 3.0
BACKOFF = (5.0, 10.0, 20.0, 40.0, 60.0)
KNOWN_FILE = "nodes.json"  # in the service's directory: what `cluster start` said of each node
SSH_ANSWER_SECONDS = 2.0


@attrs.define
class Tries:
    """One worker out of the cluster: where it stands, in words, and when it is looked at next."""

    failures: int = 0
    next_at: float = 0.0  # monotonic
    busy: bool = False
    note: str = "out of the cluster"


class Rejoiner:
    """The service's thread that brings workers of the config back into the cluster."""

    def __init__(self, directory: str, address: str, controller: Any, stopping: Callable[[], bool]) -> None:
        self.directory, self.address, self.controller, self.stopping = directory, address, controller, stopping
        self.path = os.path.join(directory, KNOWN_FILE)
        try:
            with open(self.path, encoding="utf-8") as f:
                self.known: dict[str, dict[str, str]] = json.load(f)
        except (OSError, ValueError):
            self.known = {}
        self.tries: dict[str, Tries] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, name="grid-rejoin", daemon=True).start()

    def learn(self, nodes: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
        """`cluster start`'s word on each node ({name: {"directory": ..., "python": ...}}), kept
        on the head's disk; which workers the head could not start again by itself, and why."""
        with self.lock:
            self.known = {name: dict(info) for name, info in nodes.items()}
            with open(self.path + ".new", "w", encoding="utf-8") as f:
                json.dump(self.known, f)
            os.replace(self.path + ".new", self.path)
        return self.problems()

    def problems(self) -> dict[str, str]:
        """The workers the head could not start again by itself, and why."""
        return {node.name: why for node in self.config.nodes if (why := self.unreachable_why(node))}

    @property
    def config(self) -> Any:
        return self.controller.rules.config

    def unreachable_why(self, node: Any) -> str | None:
        """Why the head could not start this worker again by itself (None: it could, as far as a
        look at its config on the head tells)."""
        if node.is_head or node.transport_name == "local":
            return None
        if node.name not in self.known:
            return "grid cluster start has not started it"
        for what, path in (("ssh_key_path", node.ssh_key_path), ("known_hosts", node.known_hosts)):
            if path and not os.path.exists(os.path.expanduser(path)):
                return f"its {what} {path} is not on the head {self.config.head.name}"
        return None

    def notes(self) -> dict[str, str]:
        """Where each worker out of the cluster stands, in words."""
        with self.lock:
            return {name: t.note for name, t in self.tries.items()}

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while True:
            time.sleep(LOOK_SECONDS)
            try:
                self._round()
            except Exception:  # one failed round must not end it
                traceback.print_exc()

    def _alive(self) -> set[str]:
        from grid_plugin_ray_backend import gcs

        return set(gcs.alive_by_name(gcs.read_nodes(self.address)))

    def _round(self) -> None:
        if self.stopping():
            return
        config, alive = self.config, self._alive()
        now = time.monotonic()
        for node in config.nodes:
            out = not node.is_head and node.name not in alive and node.name in self.known
            with self.lock:
                if not out:
                    self.tries.pop(node.name, None)
                    continue
                tries = self.tries.setdefault(node.name, Tries())
                if tries.busy or now < tries.next_at:
                    continue
                if why := self.unreachable_why(node):
                    tries.note, tries.next_at = f"out of the cluster; cannot come back by itself: {why}", now + 60
                    continue
                if not _answers(node.host, node.port or 22):
                    tries.note = f"out of the cluster; its sshd does not answer (looked at {time.strftime('%H:%M:%S')})"
                    tries.next_at = now + LOOK_SECONDS
                    continue
                tries.busy, tries.note = True, "out of the cluster; its sshd answers: starting Ray there"
            threading.Thread(target=self._rejoin, args=(node, tries), daemon=True).start()

    def _rejoin(self, node: Any, tries: Tries) -> None:
        from grid_core import plugins
        from grid_core.cluster import Cluster
        from grid_plugin_ray_backend.backend import RayBackend

        began = time.monotonic()
        directories = {name: info["directory"] for name, info in self.known.items()}
        backend = RayBackend(self.config, directories=directories, token_source=self.directory)
        try:
            with Cluster(self.config, plugins.host()) as cluster:
                backend.rejoin(cluster, node, self.address, lambda _node, _what: None)
        except Exception as exc:
            with self.lock:
                wait = BACKOFF[min(tries.failures, len(BACKOFF) - 1)]
                tries.failures += 1
                tries.note = f"out of the cluster; could not start it again ({exc}); next try in {wait:g} s"
                tries.next_at, tries.busy = time.monotonic() + wait, False
            self._event("rejoin-failed", node.name, f"could not start it again: {exc}; next try in {wait:g} s")
            return
        with self.lock:
            tries.busy, tries.note = False, "rejoined"
        self._event("rejoin", node.name, "back in the cluster: its sshd answered and the head started Ray there "
                                         f"again in {time.monotonic() - began:.1f} s")

    def _event(self, kind: str, node: str, reason: str) -> None:
        with self.controller.lock:
            self.controller.rules.note(kind, node, reason)


def _answers(host: str, port: int) -> bool:
    """Whether the node's sshd accepts a connection (one TCP connect, no SSH handshake)."""
    try:
        with socket.create_connection((host, port), timeout=SSH_ANSWER_SECONDS):
            return True
    except OSError:
        return False
