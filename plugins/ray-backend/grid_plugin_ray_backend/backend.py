"""The `ray` backend: Ray's life on the cluster's nodes, driven through each node's transport.

start: probe every node at once (Python, versions, grid's Ray processes there), ask the GCS what
is alive, start the head and wait for it by asking the GCS, start the missing workers in
parallel and confirm each has joined. A node counts as up when the GCS lists its raylet alive and
the raylet process is really there (the GCS notices a killed raylet only after its health checks
fail). stop: end the processes grid started on each node, by PID (onnode.py), workers first.
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from grid_core import types  # records by attribute, so each record module loads when first used
from grid_core.cluster import on_node, python_candidates
from grid_core.errors import GridError
from grid_core.record import record
from grid_core.state import state_dir
from grid_core.types import Check, CommandResult, NodeOutcome, Progress, ShellEnv, TransportError, wire
from grid_plugin_ray_backend import auth, gcs, layout, records

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import ClusterConfig, NodeConfig

R = TypeVar("R")  # a record the service answers with
DISTS = ("ray", "grid-core", "grid-plugin-ray-backend")
PROBE_TIMEOUT = 60.0
START_TIMEOUT = 180.0  # one `ray start`; a cold start on a slow disk takes tens of seconds
JOIN_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


@cache
def local_versions() -> dict[str, str | None]:
    """This machine's versions, which every node must match."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:2]))}
    for dist in DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


@record
class Facts:
    """What a node's probe found."""

    python: str
    executable: str
    hostname: str
    home: str
    ssh_server_ip: str | None
    versions: dict[str, str | None]
    pids: list[int]
    raylets: list[str]
    gpus: list[list[Any]] = attrs.Factory(list)  # [index, name, total MiB, uuid] from nvidia-smi there

    def gpu_info(self) -> tuple[types.GpuInfo, ...]:
        return tuple(types.GpuInfo(int(i), str(name), int(mib) * 2**20, str(uuid), "driver")
                     for i, name, mib, uuid in self.gpus)
    plugins: dict[str, str] = attrs.field(factory=dict)  # every distribution with a grid plugin there


def _tail(result: CommandResult, lines: int = 3) -> str:
    text = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return " | ".join(line.strip() for line in text[-lines:]) or f"exit status {result.exit_status}"


def route_source(toward: str | None) -> str:
    """The address this machine sends from toward `toward` (its main address without one);
    a UDP connect picks the route and sends nothing."""
    target = toward or "192.0.2.1"  # TEST-NET-1: only the route to it matters
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((target, 9))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def resolve(host: str) -> str:
    try:
        return str(socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0])
    except OSError:
        return host


class RayBackend:
    """Ray on the nodes of one cluster config."""

    def __init__(self, config: ClusterConfig, *, directories: Mapping[str, str] | None = None,
                 token_source: str | None = None) -> None:
        self.config = config
        # Where the grid service on the head starts a worker again (rejoin.py): each node's grid
        # directory as the CLI that started the cluster named it, and the head's own token.
        self.directories, self.token_source = dict(directories or {}), token_source

    # ------------------------------------------------------------------ nodes

    def _dir(self, node: NodeConfig) -> str:
        return self.directories.get(node.name) or layout.node_dir(self.config, node)

    def probe(self, cluster: Cluster, node: NodeConfig) -> Facts:
        """Run the probe with the first of the node's interpreters that exists."""
        transport = cluster.transport(node)
        candidates = python_candidates(self.config, node)
        for python in candidates:
            result = transport.run([python, "-c", layout.onnode_source(), "probe", self._dir(node), *DISTS],
                                   timeout=PROBE_TIMEOUT)
            if result.exit_status == 127 or "No such file or directory" in result.stderr:
                continue
            if result.exit_status != 0:
                raise GridError(f"{python} failed on the node: {_tail(result)}")
            try:
                return Facts(**json.loads(result.stdout.strip().splitlines()[-1]))
            except (ValueError, IndexError, TypeError):
                raise GridError(f"unexpected answer from {python}: {_tail(result)}") from None
        raise GridError(f"no Python at {' or '.join(candidates)}; run `grid cluster install` or set backend.python")

    def _survey(self, cluster: Cluster, nodes: Sequence[NodeConfig], progress: Progress) -> dict[str, Facts | str]:
        for node in nodes:
            progress(node.name, "checking")
        out: dict[str, Facts | str] = {}
        for result in cluster.fan_out(nodes, lambda n: self.probe(cluster, n)):
            out[result.node.name] = result.value if result.error is None else result.error
        return out

    def python_problem(self, version: str, head_version: str | None) -> str | None:
        # Ray compares at the level RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL names (default: patch).
        level = self.config.backend.env.get("RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL", "patch")
        parts = 3 if level == "patch" else 2
        if head_version is None or version.split(".")[:parts] == head_version.split(".")[:parts]:
            return None
        what, alternative = ("patch level", ', or set backend.env.RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL = "minor"') \
            if parts == 3 else ("version", "")
        return (f"Python {version} here, {head_version} on the head, and Ray refuses a different {what}: install "
                f"Python {head_version} on the node (then `grid cluster install`){alternative}")

    def engine_probe(self) -> str:
        # Python 2 and 3 syntax: doctor's probe runs it with whatever interpreter the node has.
        return "import ray\nprint('engine=' + ray.__version__)\n"

    def engine_check(self, facts: Mapping[str, str], head_facts: Mapping[str, str] | None, *,
                     is_head: bool, python: str) -> Check:
        """Ray imports on the node, at the head's version."""
        if "engine" not in facts:
            return Check("ray", False, f"`import ray` fails with {python}: {facts.get('engine_error', 'no answer')}")
        version = facts["engine"]
        if is_head:
            return Check("ray", True, f"{version} (head)")
        head = (head_facts or {}).get("engine")
        if head is None:
            return Check("ray", True, f"{version} (the head's version is unknown)")
        if version != head:
            return Check("ray", False, f"{version}, but the head has {head}: install ray=={head}")
        return Check("ray", True, version)

    def mismatch(self, facts: Facts, node: str) -> str | None:
        """Why the node cannot join this machine's cluster, or None: Python, ray and grid, then
        every plugin distribution that counts on it (grid_core.plugin_set)."""
        from grid_core.plugin_set import Here

        problem = self._version_mismatch(facts)
        if problem is None:
            plugins = Here().differences(node, node == self.config.head.name, {**facts.plugins, **facts.versions})
            problem = "; ".join(plugins) or None
        return problem

    @staticmethod
    def _version_mismatch(facts: Facts) -> str | None:
        here = local_versions()
        if facts.python.rsplit(".", 1)[0] != here["python"]:
            return f"Python {facts.python} at {facts.executable}, {here['python']} here; run `grid cluster install`"
        for dist in DISTS:
            if facts.versions.get(dist) is None:
                return f"{dist} is not installed for {facts.executable}; run `grid cluster install`"
            if facts.versions[dist] != here[dist]:
                return (f"{dist} {facts.versions[dist]} at {facts.executable}, {here[dist]} here; "
                        "run `grid cluster install`")
        return None

    def _addresses(self, survey: dict[str, Facts | str]) -> dict[str, str]:
        """Each node's address, as the others reach it: set in ray_start_params, else the address
        its SSH connection arrived at, else its host resolved; local nodes use the route toward
        the first remote node."""
        out = {}
        for node in self.config.nodes:
            facts = survey.get(node.name)
            if address := self._address(node, facts if isinstance(facts, Facts) else None):
                out[node.name] = address
        remote = next(iter(out.values()), None)
        for node in self.config.nodes:
            out.setdefault(node.name, route_source(remote))
        return out

    @staticmethod
    def _address(node: NodeConfig, facts: Facts | None) -> str | None:
        """A node's address as the others reach it, where it is not a local node's."""
        param = node.ray_start_params.get("node-ip-address") or node.ray_start_params.get("node_ip_address")
        if param:
            return str(param)
        if node.transport_name != "local":
            return (facts.ssh_server_ip if facts else None) or resolve(node.host)
        return None

    def rejoin(self, cluster: Cluster, node: NodeConfig, gcs_address: str, progress: Progress) -> None:
        """Start Ray again on a worker that left the cluster, from the head (rejoin.py): as `cluster
        start` starts a missing worker, in the directory it named."""
        facts = self.probe(cluster, node)
        if problem := self.mismatch(facts, node.name):
            raise GridError(problem)
        address = self._address(node, facts) or route_source(gcs_address.rpartition(":")[0])
        self._start_node(cluster, node, facts, address, gcs_address, gcs_address, set(), progress)

    def _gcs_address(self, addresses: dict[str, str]) -> str:
        host = addresses[self.config.head.name]
        return f"{host}:{layout.gcs_port(self.config, host, records.load(self.config.name).gcs_address)}"

    # ------------------------------------------------------------------ the contract

    def install(self, cluster: Cluster, nodes: Sequence[NodeConfig], *, wheelhouse: str | None,
                extra: Sequence[str], progress: Progress) -> list[NodeOutcome]:
        from grid_plugin_ray_backend.install import install

        return install(self.config, cluster, nodes, wheelhouse=wheelhouse, extra=extra, progress=progress)

    def check(self, cluster: Cluster) -> list[NodeOutcome]:
        survey = self._survey(cluster, self.config.nodes, lambda _n, _m: None)
        head = survey.get(self.config.head.name)
        out = []
        for node in self.config.nodes:
            facts = survey[node.name]
            if isinstance(facts, str):
                out.append(NodeOutcome(node.name, False, "failed", facts))
            elif problem := self.mismatch(facts, node.name) or (None if node.is_head else self.python_problem(
                    facts.python, head.python if isinstance(head, Facts) else None)):
                out.append(NodeOutcome(node.name, False, "failed", problem))
            else:
                out.append(NodeOutcome(node.name, True, "ready", f"ray {facts.versions['ray']} at {facts.executable}"))
        return out

    def start(self, cluster: Cluster, *, dry_run: bool, progress: Progress) -> list[NodeOutcome]:
        cfg, head = self.config, self.config.head
        auth.use_in_this_process(cfg)
        began = time.monotonic()
        # Ray's import (half a second of CPU) overlaps the probes, which mostly wait on the network.
        threading.Thread(target=gcs.import_ray, daemon=True).start()
        survey = self._survey(cluster, cfg.nodes, progress)
        failed: dict[str, str] = {}
        facts: dict[str, Facts] = {}
        head_facts = survey.get(head.name)
        head_python = head_facts.python if isinstance(head_facts, Facts) else None
        for name, found in survey.items():
            if isinstance(found, str):
                failed[name] = found
            elif problem := self.mismatch(found, name) or (
                    None if name == head.name else self.python_problem(found.python, head_python)):
                failed[name] = problem
            else:
                facts[name] = found
        notes = self._extra_plugins(facts)
        addresses = self._addresses(survey)
        gcs_address = self._gcs_address(addresses)
        if cfg.backend.tls and not dry_run:
            auth.make_tls(cfg, list(addresses.values()))
        alive: dict[str, gcs.RayNode] = {}
        if head.name in facts and gcs.port_open(gcs_address):
            try:
                alive = gcs.alive_by_name(gcs.read_nodes(gcs_address))
            except gcs.GcsError as exc:
                failed[head.name] = str(exc)

        def up(name: str) -> bool:
            return name in alive and name in facts and alive[name].node_id in facts[name].raylets

        head_up = up(head.name)
        if head.name in failed:
            for name in facts:
                if name != head.name:
                    failed[name] = f"not started: the head {head.name} cannot start"
            facts = {}
        plan = {name: "running" if head_up and up(name) else "start" for name in facts}
        for name, action in plan.items():
            role = "head" if name == head.name else "worker"
            progress(name, f"up as {role} at {addresses[name]}; left alone" if action == "running"
                     else f"will start as {role} at {addresses[name]}")
        if dry_run:
            planned = {n: "running" if a == "running" else "would start" for n, a in plan.items()}
            return self._outcomes(failed, planned, {}, time.monotonic() - began, notes)

        done: dict[str, str] = {n: "running" for n, a in plan.items() if a == "running"}
        # Nodes left alone still get a working directory added to the config since they started.
        for result in cluster.fan_out([cfg.node(n) for n in done], lambda n: self._working_directory(cluster, n)):
            if result.error is not None:
                failed[result.node.name] = result.error
                done.pop(result.node.name)
        seconds: dict[str, float] = {}
        state = records.load(cfg.name)
        workers = [n for n in cfg.nodes if plan.get(n.name) == "start" and n.name != head.name]

        listing = gcs.Listing(gcs_address)  # the workers wait on one listing of the GCS a round

        def start_worker(node: NodeConfig) -> None:
            stale = {alive[node.name].node_id} if node.name in alive else set()
            self._start_node(cluster, node, facts[node.name], addresses[node.name], gcs_address, gcs_address,
                             stale, progress, listing)

        if plan.get(head.name) == "start":
            state = records.Records()  # a new head: what was recorded belongs to the old cluster
            # Workers start once the head's `ray start` has returned. Starting them as soon as its GCS
            # answers was slower on a 2-core machine (every start competes for the same CPUs).
            began = time.monotonic()
            try:
                self._start_node(cluster, head, facts[head.name], addresses[head.name], None, gcs_address,
                                 {alive[head.name].node_id} if head.name in alive else set(), progress)
                done[head.name] = "started"
            except (GridError, TransportError) as exc:
                failed[head.name] = str(exc)
                for node in workers:
                    failed[node.name] = f"not started: the head {head.name} did not start"
            seconds[head.name] = time.monotonic() - began
        if head.name in done:
            for result in cluster.fan_out(workers, start_worker):
                seconds[result.node.name] = result.seconds
                if result.error is None:
                    done[result.node.name] = "started"
                else:
                    failed[result.node.name] = result.error
            state.gcs_address = gcs_address
            for name in done:
                self._record(state, cfg.node(name), facts[name], addresses[name])
            records.save(cfg.name, state)
            # The service runs what the config says from the start on (offload.enabled means on).
            progress(head.name, "starting the grid service")
            try:
                started = [e for e in self.offload_status(cluster).events if e.kind == "controller"]
                if started:  # what it restored: settings, holds and boosts, from the GCS or the head's disk
                    progress(head.name, f"grid service: {started[-1].reason}")
            except GridError as exc:
                failed[head.name] = f"started, but the grid service did not: {exc}"
            else:
                self._tell_rejoin(cluster, progress)
        return self._outcomes(failed, done, seconds, 0.0, notes)

    def _tell_rejoin(self, cluster: Cluster, progress: Progress) -> None:
        """Tell the service each node's grid directory, so that it can start a worker that leaves
        the cluster again by itself (rejoin.py); say which workers it cannot."""
        known = {node.name: {"directory": self._dir(node)} for node in self.config.nodes}
        try:
            cannot = self._call(cluster, "nodes_known", {"nodes": known}).result or {}
        except GridError as exc:  # a service older than this CLI: `cluster start --restart-service` updates it
            progress(self.config.head.name, f"warning: the grid service cannot start workers again by itself: {exc}")
            return
        for name, why in cannot.items():
            progress(name, f"warning: cannot come back by itself after a reboot: {why}")

    def rejoin_problems(self, cluster: Cluster) -> list[str]:
        """For doctor: the workers that cannot come back by themselves, and why (none while the
        cluster is not running)."""
        if records.load(self.config.name).gcs_address is None:
            return []
        try:
            cannot = self._call(cluster, "rejoin_problems").result or {}
        except (GridError, TransportError):
            return []
        return [f"node {name} cannot come back by itself after a reboot: {why}" for name, why in cannot.items()]

    @staticmethod
    def _extra_plugins(facts: Mapping[str, Facts]) -> dict[str, str]:
        """Per node, the plugin distributions it has and this machine does not (named, not refused)."""
        from grid_core.plugin_set import Here

        here = Here()
        found = {name: here.extras(f.plugins) for name, f in facts.items()}
        return {name: f"also has {', '.join(extra)}, which this machine does not" for name, extra in found.items()
                if extra}

    def _outcomes(self, failed: dict[str, str], done: dict[str, str], seconds: dict[str, float],
                  default_seconds: float, notes: Mapping[str, str] | None = None) -> list[NodeOutcome]:
        out = []
        for node in self.config.nodes:
            took = seconds.get(node.name, default_seconds)
            if node.name in failed:
                out.append(NodeOutcome(node.name, False, "failed", failed[node.name], took))
            else:
                note = (notes or {}).get(node.name, "")
                out.append(NodeOutcome(node.name, True, done.get(node.name, "skipped"), note, took))
        return out

    def _record(self, state: records.Records, node: NodeConfig, facts: Facts, address: str) -> None:
        state.nodes[node.name] = records.NodeRecord(self._dir(node), address, facts.executable,
                                                    node.name == self.config.head.name)

    def _start_node(self, cluster: Cluster, node: NodeConfig, facts: Facts, address: str, head_address: str | None,
                    gcs_address: str, stale: set[str], progress: Progress,
                    listing: Callable[[], list[gcs.RayNode]] | None = None) -> None:
        """Start Ray on one node (stopping grid's leftovers there first) and wait until the GCS lists it."""
        from grid_core.builtin.psutil_metrics import CLUSTER_MARKERS_ENV

        transport = cluster.transport(node)
        directory = self._dir(node)
        self._initialize(cluster, node, progress)
        if facts.pids:
            progress(node.name, f"stopping {len(facts.pids)} leftover Ray processes")
            self._stop_processes(cluster, node, facts.executable, directory)
        progress(node.name, "copying the token")
        auth.carry(transport, self.config, directory, self.token_source)
        from grid_core.gpus import node_gpus

        gpus, note = node_gpus(node, facts.gpu_info())
        if note:
            progress(node.name, f"warning: {note}")
        argv = layout.ray_start_argv(self.config, node, python=facts.executable, address=address,
                                     directory=directory, head_address=head_address, gpus=gpus,
                                     port=int(gcs_address.rpartition(":")[2]))
        progress(node.name, "ray start")
        env = {**self.config.backend.env, **auth.ray_env(directory, self.config.backend.tls),
               CLUSTER_MARKERS_ENV: os.pathsep.join(self._markers(node))}
        result = transport.run(argv, env=env, timeout=START_TIMEOUT)
        if result.exit_status != 0:
            raise GridError(f"ray start failed: {_tail(result)}")
        progress(node.name, "waiting for the GCS to list it")

        def joined(nodes: list[gcs.RayNode]) -> gcs.RayNode | None:
            return next((n for n in nodes if n.alive and n.grid_name == node.name and n.node_id not in stale), None)

        try:
            gcs.wait_for(gcs_address, joined, JOIN_TIMEOUT, listing=listing)
        except gcs.GcsError as exc:
            self._stop_processes(cluster, node, facts.executable, directory)
            raise GridError(f"started but did not join: {exc}") from None
        progress(node.name, "joined")

    def _markers(self, node: NodeConfig) -> list[str]:
        """What names the cluster's processes on the node, for the psutil source's owner/cluster
        split: Ray's temp dir in grid's directory there; for a local node, in every local node's
        (several raylets of one machine are all the cluster's)."""
        same_machine = [n for n in self.config.nodes if n.transport_name == "local"] \
            if node.transport_name == "local" else [node]
        return [posixpath.join(self._dir(n), "ray") for n in same_machine]

    def _working_directory(self, cluster: Cluster, node: NodeConfig) -> None:
        """Make execution.working_directory on the node, where jobs run."""
        path = self.config.execution.working_directory
        if path:
            made = cluster.transport(node).run(["mkdir", "-p", on_node(node, path)], timeout=60)
            if made.exit_status != 0:
                raise GridError(f"cannot make the working directory {path}: {_tail(made)}")

    def _initialize(self, cluster: Cluster, node: NodeConfig, progress: Progress) -> None:
        """Before Ray starts on a node: its working directory, then its initialization commands in order."""
        self._working_directory(cluster, node)
        sharing = node.resource_sharing
        for command in sharing.initialization_commands if sharing else ():
            progress(node.name, f"initialization: {command}")
            result = cluster.transport(node).run(["sh", "-c", command], timeout=START_TIMEOUT)
            if result.exit_status != 0:
                raise GridError(f"initialization command {command!r} failed: {_tail(result)}")
            if out := result.stdout.strip():
                progress(node.name, f"initialization: {out.splitlines()[-1][:200]}")

    def _stop_processes(self, cluster: Cluster, node: NodeConfig, python: str, directory: str) -> dict[str, Any]:
        result = cluster.transport(node).run([python, "-c", layout.onnode_source(), "stop", directory],
                                             timeout=STOP_TIMEOUT)
        try:
            answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise GridError(f"stopping Ray failed: {_tail(result)}") from None
        if answer.get("left"):
            raise GridError(f"Ray processes {answer['left']} did not end")
        return answer

    def stop(self, cluster: Cluster, *, progress: Progress) -> list[NodeOutcome]:
        cfg = self.config
        state = records.load(cfg.name)
        known = {n.name for n in cfg.nodes}
        outcomes: dict[str, NodeOutcome] = {}
        for name in state.nodes:
            if name not in known:
                outcomes[name] = NodeOutcome(name, False, "failed",
                                             f"grid started Ray there, but the config no longer has node {name!r}")

        def stop_node(node: NodeConfig) -> tuple[str, str]:
            record = state.nodes.get(node.name)
            python = record.python if record else None
            directory = record.directory if record else self._dir(node)
            progress(node.name, "stopping")
            if python is None:
                python = self.probe(cluster, node).executable
            answer = self._stop_processes(cluster, node, python, directory)
            auth.take_back(cluster.transport(node), directory)
            count = len(answer["stopped"])
            return ("stopped", f"{count} processes") if count else ("not running", "")

        head = cfg.head
        workers = [n for n in cfg.nodes if n.name != head.name]
        for group in (workers, [head]):
            for result in cluster.fan_out(group, stop_node):
                name = result.node.name
                if result.error is None:
                    action, detail = result.value
                    outcomes[name] = NodeOutcome(name, True, action, detail, result.seconds)
                    state.nodes.pop(name, None)
                elif name not in state.nodes:
                    outcomes[name] = NodeOutcome(name, True, "not started", f"not reached: {result.error}",
                                                 result.seconds)
                else:
                    outcomes[name] = NodeOutcome(name, False, "failed", result.error, result.seconds)
        if not state.nodes:
            state.gcs_address = None
            auth.forget(cfg.name)  # the next start issues a new token
        records.save(cfg.name, state)
        order = [n.name for n in cfg.nodes] + [n for n in outcomes if n not in known]
        return [outcomes[name] for name in order if name in outcomes]

    def status(self, cluster: Cluster) -> dict[str, types.EngineNode]:
        names = [n.name for n in self.config.nodes]
        address = records.load(self.config.name).gcs_address
        if address is None and not self.config.access.shared:  # else maybe another user's: ask its door
            return dict.fromkeys(names, types.EngineNode(error="not started; start it with `grid cluster start`"))
        try:
            if address is not None:
                _engine_answers(address)
            answer = self._call(cluster, "status").result
        except GridError as exc:
            return dict.fromkeys(names, types.EngineNode(error=str(exc)))
        return engine_nodes(names, self.config.head.name, answer)

    def restart_service(self, cluster: Cluster) -> None:
        from grid_core.config import unstructure
        from grid_plugin_ray_backend import channel

        state = records.load(self.config.name)
        record = state.nodes.get(self.config.head.name)
        if state.gcs_address is None or record is None:
            raise GridError(f"cluster {self.config.name!r} is not running; start it with `grid cluster start`")
        channel.ensure(self.config, cluster, state.gcs_address, record, unstructure(self.config), restart=True)

    # ------------------------------------------------------------------ jobs

    def _call(self, cluster: Cluster, op: str, params: dict[str, Any] | None = None, *,
              on_output: Callable[[str, str], None] | None = None, streaming: bool = False) -> Any:
        """Ask the grid service on the head (channel.py); its answer. A refusal is a GridError."""
        from grid_plugin_ray_backend import channel

        return channel.call(self.config, cluster, op, params, on_output=on_output, streaming=streaming)

    def _results(self, cluster: Cluster) -> Callable[[str, dict[str, Any]], Any]:
        """_call's answers' results, as quick.py's request builders take them (quick.Call)."""
        return lambda op, params: self._call(cluster, op, params).result

    def submit(self, cluster: Cluster, spec: types.JobSpec, *, detach: bool,
               on_output: Callable[[str, str], None]) -> tuple[str, int | None]:
        job_id = spec.job_id or new_job_id()
        payload = wire().unstructure(attrs.evolve(spec, job_id=job_id))
        if detach:
            self._call(cluster, "run", {"spec": payload, "detach": True})
            return job_id, None
        from grid_plugin_ray_backend.attach import Follower

        # Asked again after a lost connection, `run` follows the job it already started (attach.py).
        return job_id, Follower(self.config, cluster, job_id, on_output).follow("run", {"spec": payload})

    def shortcut(self, cluster: Cluster) -> types.Shortcut | None:
        """How the next command that only asks the service reaches it with nothing else loaded
        (grid_core/shortcut.py; quick.py sends its requests): straight to the service's socket on the head,
        or by the transport's route to it (the ssh keeper's). None where the transport has no route
        (relay.py, a process on the head, is the way there)."""
        from grid_core.access import channel_head
        from grid_core.config import unstructure
        from grid_core.shortcut import stamp
        from grid_plugin_ray_backend import frames, quick

        shared = self.config.access.shared
        record = records.load(self.config.name).nodes.get(self.config.head.name)
        if record is None and not shared:
            return None
        path = f"{layout.door_dir(self.config) if shared else record.directory}/{frames.SOCKET}"  # type: ignore[union-attr]
        local = self.config.head.transport_name == "local"
        offer = None if local else getattr(cluster.transport(channel_head(self.config)), "stream_route", None)
        route = types.StreamRoute(socket=path) if local else offer(path) if offer is not None else None
        if route is None:
            return None
        return types.Shortcut(client=f"{quick.__name__}:{quick.Client.__name__}", route=route,
                              payload={"config": unstructure(self.config), "stage": not local and not shared},
                              checks=tuple(stamp(p) for p in (records.path(self.config.name), quick.__file__,
                                                              frames.__file__)))

    def jobs(self, cluster: Cluster, *, everything: bool = False, user: str | None = None,
             mine: bool = False) -> list[dict[str, Any]]:
        from grid_plugin_ray_backend import quick

        return quick.jobs(self._results(cluster), everything=everything, user=user, mine=mine)

    def jobs_text(self, cluster: Cluster, *, everything: bool = False, user: str | None = None,
                  mine: bool = False) -> types.JobsText:
        from grid_plugin_ray_backend import quick

        return quick.jobs_text(self._results(cluster), everything=everything, user=user, mine=mine)

    def listing(self, cluster: Cluster, *, shown: int, expand: bool = False, everything: bool = False,
                user: str | None = None, mine: bool = False) -> dict[str, Any]:
        from grid_plugin_ray_backend import quick

        return quick.listing(self._results(cluster), shown=shown, expand=expand, everything=everything, user=user,
                             mine=mine)

    def usage(self, cluster: Cluster) -> list[dict[str, Any]]:
        return list(self._call(cluster, "usage").result or [])

    def logs(self, cluster: Cluster, job_id: str, *, follow: bool,
             on_output: Callable[[str, str], None], attempt: int | None = None) -> int | None:
        params: dict[str, Any] = {"job_id": job_id} | ({"attempt": attempt} if attempt else {})
        if not follow:
            return int(self._call(cluster, "logs", params, on_output=on_output).status)
        from grid_plugin_ray_backend.attach import Follower

        return Follower(self.config, cluster, job_id, on_output).follow("logs", {**params, "follow": True})

    def stop_job(self, cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
        return list(self._call(cluster, "stop_job", {"job_id": job_id}).result or [])

    def hold_job(self, cluster: Cluster, job_id: str, *, held: bool) -> list[dict[str, Any]]:
        return list(self._call(cluster, "hold_job", {"job_id": job_id, "held": held}).result or [])

    def drain(self, cluster: Cluster) -> int:
        if records.load(self.config.name).gcs_address is None:
            return 0
        try:
            return int(self._call(cluster, "drain").result["queued"])
        except (GridError, TransportError):  # the service is gone already: nothing runs to stop
            return 0


    # ------------------------------------------------------------------ Ray's own tools

    def shell_env(self, cluster: Cluster) -> ShellEnv:
        name = self.config.name
        state = records.load(name)
        if state.gcs_address is None:
            raise GridError(f"cluster {name!r} is not running; start it with `grid cluster start`")
        auth.local_token(name)  # checked: never a token that others could read
        variables = {"RAY_ADDRESS": state.gcs_address, **auth.ray_env(str(state_dir(name)), self.config.backend.tls)}
        notes = []
        if self.config.backend.dashboard:
            host = state.gcs_address.rsplit(":", 1)[0]
            variables["RAY_API_SERVER_ADDRESS"] = f"http://{host}:{self.config.backend.dashboard_port}"
        else:
            notes.append("`ray job submit` and `ray list` need Ray's dashboard: set backend.dashboard = true "
                         "(with ray[default] on the nodes) and start the cluster again")
        # RAY_AUTH_TOKEN would win over the token path: a shell's old value must not pick the cluster.
        return ShellEnv(name, variables, unset=("RAY_AUTH_TOKEN",), notes=tuple(notes))

    def service_channel(self, cluster: Cluster) -> str | None:
        """For doctor: how a request reaches the grid service from here (channel.route), while it runs."""
        from grid_plugin_ray_backend import channel

        record = records.load(self.config.name).nodes.get(self.config.head.name)
        if record is None:
            return None
        how = channel.route(cluster, self.config, f"{record.directory}/{channel.SOCKET}")
        return {"socket": "the service's Unix socket (this is the head)",
                "streamlocal": "SSH, sshd forwarding the service's Unix socket (streamlocal)",
                "relay": "SSH, relay.py on the head (its sshd does not forward Unix sockets)"}[how]

    def stray_engines(self, cluster: Cluster) -> list[str]:
        from grid_plugin_ray_backend.strays import stray_warnings

        own_dirs = [self._dir(n) for n in self.config.nodes if n.transport_name == "local"]
        state = records.load(self.config.name)
        return stray_warnings(self.config.name, own_dirs, state.gcs_address)

    # ------------------------------------------------------------------ the offload controller

    def _control(self, cluster: Cluster, action: str, params: dict[str, Any], answer: type[R]) -> R:
        """Ask the offload controller in the grid service; its answer, read as the record `answer`."""
        from grid_plugin_ray_backend import quick

        return quick.control(self._results(cluster), action, params, answer)

    def offload_status(self, cluster: Cluster) -> types.ControllerStatus:
        return self._control(cluster, "status", {}, types.ControllerStatus)

    def configure_offload(self, cluster: Cluster, *, enabled: bool | None = None, policy: str | None = None,
                          high: Mapping[str, float] | None = None) -> types.ControllerStatus:
        params = {"enabled": enabled, "policy": policy, "high": dict(high) if high else None}
        return self._control(cluster, "configure", params, types.ControllerStatus)

    def hold(self, cluster: Cluster, node: str, reason: str) -> types.ControllerStatus:
        return self._control(cluster, "hold", {"node": node, "reason": reason}, types.ControllerStatus)

    def release(self, cluster: Cluster, node: str) -> types.ControllerStatus:
        return self._control(cluster, "release", {"node": node}, types.ControllerStatus)

    def boost(self, cluster: Cluster, *, target: str, resource: str, amount: float, priority: str,
              duration: float | None = None, source: str | None = None, gpu_types: Sequence[str] = (),
              gpu_memory_bytes: int = 0) -> types.Boost:
        params = {"target": target, "resource": resource, "amount": amount, "priority": priority,
                  "duration": duration, "source": source}
        if gpu_types or gpu_memory_bytes:  # only then: a service of before these options still answers the rest
            params |= {"gpu_types": list(gpu_types), "gpu_memory_bytes": gpu_memory_bytes}
        return self._control(cluster, "boost", params, types.Boost)

    def release_boost(self, cluster: Cluster, boost_id: str) -> types.Boost:
        return self._control(cluster, "boost_release", {"boost_id": boost_id}, types.Boost)


def _engine_answers(address: str) -> None:
    """Fail fast, with the reason, when nothing listens at the GCS (the service would wait on it)."""
    if not gcs.port_open(address):
        raise GridError(f"no Ray cluster answers at {address}")


def new_job_id() -> str:
    return os.urandom(4).hex()  # secrets.token_hex(4), without the import of hmac and hashlib


def engine_nodes(names: list[str], head: str, answer: dict[str, Any]) -> dict[str, types.EngineNode]:
    """Each named node as the service's `status` answer shows it (GridService.status)."""
    nodes = gcs.alive_by_name([gcs.RayNode(**node) for node in answer["nodes"]])
    readings = answer["readings"]  # what each node's agent sent lately: no node is read again for its row
    out = {}
    for name in names:
        node, reading = nodes.get(name), readings.get(name)
        rejoin = answer.get("rejoin", {}).get(name)
        out[name] = types.EngineNode(error="not in the Ray cluster" + (f"; {rejoin}" if rejoin else "")) \
            if node is None else types.EngineNode(
            alive=True, node_id=node.node_id, address=node.address, cpus=node.total.get("CPU", 0.0),
            gpus=node.total.get("GPU", 0.0), memory_bytes=int(node.total.get("memory", 0)),
            resources=gcs.resource_usage(node),
            metrics=wire().structure(reading["metrics"], types.NodeMetrics) if reading else None,
            metrics_age=float(reading["age"]) if reading else None,
            metrics_from=reading.get("from") if reading else None,
            service_plugins=answer.get("plugins") if name == head else None)
    return out
