"""The grid service: one detached actor on the head that owns the cluster's live state.

It holds the offload controller (holds, boosts, events) and the job queue (job_queue.py), and
answers the CLI over a Unix socket in grid's 0700 directory on the head (`grid.sock`); a CLI
on another machine reaches that socket through its SSH connection to the head (relay.py). The
CLI never starts a Ray driver or imports Ray for these calls. Ray restarts the actor if it dies
(max_restarts=-1); the controller's state is in the GCS's key-value store and a file, the jobs'
in the job store on the head's disk, so a restarted service carries on.

The protocol, one JSON document a line (channel.py is the client):
- the client sends `{"op": ..., "params": {...}, "config": {...}}`: the config it loaded, which
  the service adopts when it is a new revision;
- the service answers with frames, `[kind, value]`: `"out"` and `"err"` for a job's stdout and
  stderr text, `"event"` for grid's own records of what happened, `"note"` for a line the user
  reads at once on stderr (a job that waits: why, its place in line), `"result"` for an answer, `"error"` for a
  refusal, then always `["exit", status]`. A job's output travels inside a frame as a JSON
  string, so nothing a job prints can pass for grid's messages, whatever its size. A listing of
  megabytes, already JSON, follows its result as `["text", null]` and then the text as one line,
  which would otherwise be escaped into a string and read back (Client.result_text);
- bytes travel as `["data", base64]` frames after the request or in the answer; a client on
  another machine (`"stage": true`) moves 1 MiB or more by SFTP instead, as a file in the
  head's 0700 `transfers/` directory: `"staged_data": PATH` in its request, a `["staged", PATH]`
  frame in the answer (base64 over the relay cost 2.6x an SFTP copy of the same bytes);
- a followed job's output (`run` not detached, `logs` with follow) carries a `["beat", null]` frame
  each BEAT_SECONDS, so a client tells a dead link from a quiet job. The client closing its end,
  or losing it, never stops the job: only `stop_job` does (Ctrl-C sends it). `run` and `logs`
  take `since`, where the client stood in the job's stdout and stderr (characters of each), and
  send the output after it; `run` with the id of a job the service knows follows that job, so a
  client whose connection dropped sends its `run` again and its output resumes, none lost or repeated.

`python -m grid_plugin_ray_backend.service --address ... --namespace ... --head ... --directory ...`
(its config as JSON on stdin, never in argv) makes sure the service runs: `cluster start` runs it
on the head, and so does the client when it finds no service. With `--restart` it first ends the
service and the node agents, so that they start again with the plugins installed now
(`grid cluster start --restart-service`); the service records its plugin set when it starts.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import pwd
import select
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from grid_plugin_ray_backend.frames import CALL_TIMEOUT, DATA_CHUNK, SERVICE_ERROR, SOCKET, STAGE_MIN, STAGING
from grid_plugin_ray_backend.layout import SERVICE, node_resource

STATE_FILE = "service-state.json"  # settings, holds and boosts, for a restart of the whole cluster
POLL_SECONDS = 0.1
MAX_REQUEST = 64 * 2**20  # the request line; data travels after it in frames
BEAT_SECONDS = 1.0
STAGE_KEEP = 3600.0  # seconds a staged answer may wait for its client's copy
AGENT_SECONDS = 5.0  # how often the agents are made sure of


class ServiceError(Exception):
    """A refusal, sent to the client as an "error" frame."""


def socket_path(directory: str) -> str:
    return os.path.join(directory, SOCKET)


def stage(directory: str, data: bytes) -> str:
    """data in a new file (0600) under directory, made 0700; files there older than STAGE_KEEP
    (left by a client that went away mid-copy) are removed first. Returns the file's path."""
    import tempfile

    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        with contextlib.suppress(OSError):
            if time.time() - os.stat(path).st_mtime > STAGE_KEEP:
                os.unlink(path)
    fd, path = tempfile.mkstemp(dir=directory, prefix="get-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


class Client:
    """One connection: frames out, and whether the client is still there."""

    def __init__(self, sock: socket.socket, staging: str | None = None) -> None:
        self.sock = sock
        self.buffer = b""
        self.staging = staging  # where big answers are left for the client to copy; None: frames only
        self.staged_data: str | None = None  # a file there holding the request's data, instead of frames
        self.name = ""  # the caller's user name (SO_PEERCRED), and what it is to the cluster (access.py)
        self.config: dict[str, Any] | None = None  # the config the caller sent, as plain data
        self.role: str | None = None
        self.then: list[Callable[[], None]] = []  # done once the client has its answer and has gone

    @property
    def manages(self) -> bool:
        from grid_core.access import MANAGES

        return self.role in MANAGES

    def user(self) -> str:
        """Who is asking, as the kernel says (SO_PEERCRED), never as the client says: the local
        user, or for a CLI on another machine the account its SSH connection logged in as."""
        import pwd
        import struct

        try:
            _, uid, _ = struct.unpack("3i", self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                 struct.calcsize("3i")))
            return pwd.getpwuid(uid).pw_name
        except (OSError, KeyError):  # not a Unix socket, or a uid without a name
            return ""

    def frame(self, kind: str, value: Any) -> None:
        """Send one frame; OSError when the client has gone."""
        self.sock.sendall(json.dumps([kind, value]).encode() + b"\n")

    def result_text(self, result: dict[str, Any], text: str) -> None:
        """A result whose "text" is JSON of megabytes (a listing), sent after it as it is: a `text`
        frame, then the text as the next line (JSON has no newline outside its strings)."""
        if "\n" in text:
            self.frame("result", {**result, "text": text})
            return
        self.sock.sendall(json.dumps(["result", result]).encode() + b'\n["text", null]\n' + text.encode() + b"\n")

    def read_request(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ServiceError("the request ended before its newline")
            self.buffer += data
            if len(self.buffer) > MAX_REQUEST:
                raise ServiceError("the request is too large")
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            request = json.loads(line)
        except ValueError as exc:
            raise ServiceError(f"the request is not JSON: {exc}") from None
        if not isinstance(request, dict) or not isinstance(request.get("op"), str) \
                or not isinstance(request.get("params", {}), dict):
            raise ServiceError('a request is {"op": NAME, "params": {...}, "config": {...}}')
        return request

    def read_line(self) -> bytes:
        if b"\n" not in self.buffer:
            pieces = [self.buffer]  # a data frame is megabytes: search only what arrives
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ServiceError("the request ended before its data did")
                pieces.append(data)
                if b"\n" in data:
                    break
            self.buffer = b"".join(pieces)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def read_data(self) -> bytes:
        """The bytes the request carries: `["data", base64]` lines, then `["end", null]`; or, from
        a client on another machine, a file it copied into the staging directory (then removed)."""
        if self.staged_data is not None:
            return self._read_staged(self.staged_data)
        parts: list[bytes] = []
        while True:
            try:
                kind, value = json.loads(self.read_line())
            except (ValueError, TypeError):
                raise ServiceError("the request's data is not data frames") from None
            if kind == "end":
                return b"".join(parts)
            if kind != "data" or not isinstance(value, str):
                raise ServiceError("the request's data is not data frames")
            parts.append(base64.b64decode(value))

    def _read_staged(self, path: str) -> bytes:
        self.staged_data = None
        if self.staging is None or os.path.dirname(os.path.realpath(path)) != os.path.realpath(self.staging):
            raise ServiceError("a request's staged data must be a file in the service's staging directory")
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise ServiceError(f"cannot read the request's staged data: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def send_data(self, data: bytes) -> None:
        """Bytes as data frames (base64: the relay's SSH channel carries text), or, for a client
        that asked (one on another machine) and STAGE_MIN bytes or more, a file in grid's 0700
        directory on the head that it copies with its transport (SFTP, at the link's speed) and
        then removes: a `staged` frame names it."""
        if self.staging is not None and len(data) >= STAGE_MIN:
            self.frame("staged", stage(self.staging, data))
            return
        view = memoryview(data)
        for at in range(0, len(view), DATA_CHUNK):
            self.frame("data", base64.b64encode(view[at:at + DATA_CHUNK]).decode())

    def gone(self) -> bool:
        """Whether the client closed its end (nothing else is ever sent after the request)."""
        readable, _, _ = select.select([self.sock], [], [], 0)
        if not readable:
            return False
        try:
            return self.sock.recv(4096) == b""
        except OSError:
            return True


class GridService:
    """The actor. Requests are served by threads of its own, one per connection."""

    def __init__(self, config_data: dict[str, Any], namespace: str, head: str, address: str,
                 directory: str) -> None:
        import ray

        from grid_core.plugin_set import installed
        from grid_plugin_ray_backend.controller import OffloadController

        self.plugins = installed()  # what it runs with: status says when the CLI's set differs
        self.ray, self.namespace, self.head, self.address, self.directory = ray, namespace, head, address, directory
        self.controller = OffloadController(config_data, namespace, os.path.join(directory, STATE_FILE),
                                            head_marker=os.path.join(directory, "ray"))  # its `ray start --temp-dir`
        from grid_plugin_ray_backend.job_queue import JobQueue

        self.queue = JobQueue(ray, namespace, address, self.controller, directory)
        self.controller.mechanics.before_unreserve = self.queue.end_jobs_in
        from grid_plugin_ray_backend.rejoin import Rejoiner

        self.rejoiner = Rejoiner(directory, address, self.controller, stopping=lambda: self.queue.draining)
        self.agents: dict[str, Any] = {}
        os.makedirs(os.path.join(directory, STAGING), mode=0o700, exist_ok=True)  # clients put big data there
        self.answered = threading.Event()  # a first request was answered (see _agents)
        self.path = socket_path(directory)
        self.owner = pwd.getpwuid(os.getuid()).pw_name  # the cluster's account: what it runs as
        self.door: socket.socket | None = None  # the lab's members' way in (open_door), with [access]
        self.door_problem: str | None = None
        threading.Thread(target=self._accept, args=(listen(self.path),), name="grid-service", daemon=True).start()
        self.open_door()
        threading.Thread(target=self._agents, name="grid-service-agents", daemon=True).start()

    def ready(self) -> int:
        return os.getpid()

    def report(self, node: str, data: dict[str, Any]) -> float:
        """A node agent's reading (agent.py); the seconds until it should send the next. A node
        that reports may have just joined: the queue looks whether a job can start there."""
        self.queue.wake.set()
        return self.controller.report(node, data)

    def job_report(self, job_id: str, attempt: int, number: int, chunks: list[tuple[str, str]],
                   fields: dict[str, Any]) -> bool | str:
        """A job runner's report (jobs.Reporter), which renews its lease: answered once it is on the
        head's disk; False when the attempt no longer counts (JobQueue.report)."""
        return self.queue.report(job_id, attempt, number, chunks, fields)

    def job_fenced(self, job_id: str, attempt: int, message: str) -> None:
        """A runner's word that it killed its command when its lease ran out."""
        self.queue.fenced(job_id, attempt, message)

    def _ensure_agents(self) -> None:
        """An agent on every worker of the config in force (Ray places each when its node is up)."""
        from grid_core.config import unstructure
        from grid_plugin_ray_backend.agent import AGENT, NodeAgent

        config = self.controller.rules.config
        for node in config.nodes:
            if node.name == self.head or node.name in self.agents:
                continue
            self.agents[node.name] = self.ray.remote(NodeAgent).options(
                name=AGENT.format(node.name), lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=-1,
                resources={node_resource(node.name): 0.001}).remote(unstructure(config), node.name, self.namespace)

    # ------------------------------------------------------------------ serving

    def open_door(self) -> None:
        """The door as the config in force wants it: with [access], a socket in a directory that the
        lab's members can reach (door_dir: they find it from the config alone), opened to exactly
        them by its mode and by the check in _serve; without, none."""
        from grid_plugin_ray_backend.layout import door_dir

        access = self.controller.rules.config.access
        if self.door is not None:  # opened again as the config now says (its group may have changed)
            with contextlib.suppress(OSError):
                self.door.shutdown(socket.SHUT_RDWR)
            self.door.close()
            self.door = None
        if not access.shared:
            return
        directory = door_dir(self.controller.rules.config)
        try:
            self.door = listen(socket_path(directory), access=access)
            self.door_problem = None
        except (OSError, ServiceError) as exc:
            self.door_problem = f"the lab's members cannot reach this cluster: {exc}"
            print(f"grid service: {self.door_problem}", file=sys.stderr)
            return
        threading.Thread(target=self._accept, args=(self.door,), name="grid-service-door", daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:  # the door was closed (open_door): this loop ends with it
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        from grid_core.errors import GridError
        from grid_plugin_ray_backend.controller import ControllerError
        from grid_plugin_ray_backend.job_queue import QueueError

        client = Client(sock)
        status = SERVICE_ERROR
        try:
            request = client.read_request()
            if request.get("stage") is True:
                client.staging = os.path.join(self.directory, STAGING)
                staged = request.get("staged_data")
                client.staged_data = staged if isinstance(staged, str) else None
            self._admit(client, request)
            client.config = request.get("config")
            if client.config is not None and client.manages:  # a member's copy never rules
                access = self.controller.rules.config.access
                self.controller.adopt(request["config"])
                if self.controller.rules.config.access != access:
                    self.open_door()
            handler = HANDLERS.get(request["op"])
            params = request.get("params", {})
            if handler is None:
                status = self._plugin_op(client, request["op"], params)
            else:
                status = handler(self, client, **params)
        except (ServiceError, ControllerError, QueueError, GridError) as exc:
            with contextlib.suppress(OSError):
                client.frame("error", str(exc))
        except TypeError as exc:  # parameters that do not fit the request
            with contextlib.suppress(OSError):
                client.frame("error", f"bad request: {exc}")
        except OSError:
            pass  # the client has gone
        except Exception as exc:  # a bug: say what it was, keep serving others
            with contextlib.suppress(OSError):
                client.frame("error", f"the grid service failed: {type(exc).__name__}: {exc}")
            traceback.print_exc()
        finally:
            with contextlib.suppress(OSError):
                client.frame("exit", status)
            sock.close()
            self.answered.set()
        for then in client.then:
            then()

    def _admit(self, client: Client, request: dict[str, Any]) -> None:
        """Who asks (the kernel says), and whether they may ask this at all (grid_core/access.py)."""
        from grid_core import access

        config = self.controller.rules.config
        client.name = client.user()
        client.role = access.role(config.access, client.name, self.owner)
        if client.role is None:
            raise ServiceError(access.stranger(client.name, config.name))
        op, action = request["op"], request.get("params", {}).get("action")
        what = MANAGERS_ONLY.get(f"{op}.{action}" if op == "offload" else op)
        if what is not None and not client.manages:
            raise ServiceError(access.needs_manager(client.name, what))

    def _own(self, client: Client, jobs: list[Any], what: str) -> None:
        """A member acts on their own jobs only; the owner and the admins on anyone's."""
        if client.manages:
            return
        for job in jobs:
            if job.user != client.name:
                raise ServiceError(f"{client.name} may not {what} job {job.id}: it is {job.user or 'nobody'}'s, "
                                   "and only its submitter, the cluster's owner and [access] admins may")

    def _plugin_op(self, client: Client, op: str, params: dict[str, Any]) -> int:
        """A request a plugin answers (the `grid_service_ops` hook)."""
        import importlib

        from grid_core import plugins
        from grid_core.errors import PluginError

        try:
            registration = plugins.host().get("grid_service_ops", op)
        except PluginError as exc:
            raise ServiceError(f"unknown request {op!r}: {exc}") from None
        module, _, attr = registration.import_path.partition(":")
        handler = getattr(importlib.import_module(module), attr)
        return int(handler(client, self.controller.rules.config, **params))

    # ------------------------------------------------------------------ cluster

    def nodes(self, client: Client) -> int:
        """What the GCS says about each node (gcs.RayNode fields)."""
        client.frame("result", self._nodes())
        return 0

    def status(self, client: Client) -> int:
        """`cluster status` in one request: {"nodes": what `nodes` answers, "readings": each node's
        fresh reading as the controller has it, {node: {"age": s, "metrics": ..., "from": "agent" or "head"}}}."""
        client.frame("result", self._status())
        return 0

    def cluster_status(self, client: Client, basis: dict[str, Any]) -> int:
        """`cluster status` whole, for a caller with nothing loaded (its kept shortcut): a
        StatusAnswer, from the config the caller sent and its StatusBasis, where every node is
        alive with a fresh reading; else an empty one (the caller reads those nodes itself)."""
        from grid_core.config import structure
        from grid_core.node_status import merge_backend, node_rows
        from grid_core.plugin_set import drift
        from grid_core.types import ClusterStatus, StatusAnswer, StatusBasis, wire
        from grid_plugin_ray_backend.backend import engine_nodes
        from grid_plugin_ray_backend.rules import CONFIG_SOURCE

        here = wire().structure(basis, StatusBasis)
        # A manager's config is the controller's (adopted); a member's is theirs alone.
        config = self.controller.rules.config if client.manages or client.config is None \
            else structure(client.config, CONFIG_SOURCE)
        view = engine_nodes([n.name for n in config.nodes], config.head.name, self._status())
        if any(not node.alive or node.metrics is None for node in view.values()):
            client.frame("result", wire().unstructure(StatusAnswer()))
            return 0
        shown = ClusterStatus(cluster=config.name, source=here.source,
                              nodes=tuple(merge_backend(node_rows(config.nodes, view), view, None)),
                              plugins_changed=drift(here.versions, here.counts_on, self.plugins))
        # As the CLI's print_json writes it, so that the CLI prints it as it comes.
        client.frame("result", wire().unstructure(StatusAnswer(text=json.dumps(wire().unstructure(shown),
                                                                                default=str))))
        return 0

    def _status(self) -> dict[str, Any]:
        import cattrs

        readings = {name: {"age": age, "metrics": cattrs.unstructure(m), "from": by}
                    for name, (age, m, by) in self.controller.fresh_readings().items()}
        return {"nodes": self._nodes(), "readings": readings, "plugins": self.plugins, "rejoin": self.rejoiner.notes()}

    def nodes_known(self, client: Client, nodes: dict[str, dict[str, str]]) -> int:
        """`cluster start`'s word on each node's grid directory, for starting workers again
        (rejoin.py); the answer: which workers cannot come back by themselves, and why."""
        client.frame("result", self.rejoiner.learn(nodes))
        return 0

    def rejoin_problems(self, client: Client) -> int:
        """For doctor: which workers cannot come back by themselves, and why."""
        client.frame("result", self.rejoiner.problems())
        return 0

    def _nodes(self) -> list[dict[str, Any]]:
        import attrs

        from grid_plugin_ray_backend import gcs

        return [attrs.asdict(n) for n in gcs.read_nodes(self.address)]

    # ------------------------------------------------------------------ offload

    def offload(self, client: Client, action: str, **params: Any) -> int:
        if action not in {"status", "configure", "hold", "release", "boost", "boost_release"}:
            raise ServiceError(f"unknown offload action {action!r}")
        if action == "status":
            answer = {**self.controller.status(), "plugins": self.plugins}
        else:
            answer = self.controller.request(action, client.name, **params)
            self.queue.wake.set()  # a hold released, a boost gone: room for a waiting job, maybe
        client.frame("result", answer)
        return 0

    # ------------------------------------------------------------------ jobs

    def run(self, client: Client, spec: dict[str, Any], detach: bool = False,
            since: tuple[int, ...] = (0, 0)) -> int:
        """Queue a job, or, for a job id already known (a client asking again after its connection
        dropped), follow that one from `since`. A job that waits says why, in a note."""
        job_id = spec["job_id"]
        # Asked again (an answer lost on the way): the job, or the array's first member, as it stands.
        known = self.queue.record(job_id) or next(iter(self.queue.store.members(job_id)), None)
        added = [known] if known else self.queue.submit(spec, user=client.user())
        first = added[0]
        if spec.get("array") and not known:
            client.frame("note", f"array {job_id}: {len(added)} jobs queued ({first.id} first); "
                                 f"see them: grid jobs list --expand")
        elif first.state == "queued" and first.position is not None:
            client.frame("note", f"job {job_id} is queued, position {first.position} ({first.waiting}): "
                                 f"{first.reason}")
        client.frame("event", {"event": "job", "id": job_id, "node": first.node})
        # The planner starts it. Detached, only once the answer is out: starting a runner holds the
        # GIL for milliseconds, and the submitter need not wait for that (issue 28's submit figure).
        if detach or spec.get("array"):
            client.then.append(self.queue.wake.set)
            return 0
        self.queue.wake.set()
        return self._follow(client, job_id, since=since)

    def jobs(self, client: Client, all: bool = False, user: str | None = None, mine: bool = False,
             shown: int | None = None, expand: bool = False, text: bool = False, raw: bool = False) -> int:
        """Everyone's jobs (records, never output), or one user's: `user`, or with `mine` the caller's.
        With `shown`, what `grid jobs list` shows of them (a JobListing: grid_core/queue/listing.py);
        with `text`, a JobsText, its text sent as it is with `raw` (Client.result_text)."""
        from grid_core.queue.listing import listing

        chosen, who = mine or user is not None, client.name if mine else user
        if text:
            import attrs

            from grid_core.types import JobRecord

            fields = [f.name for f in attrs.fields(JobRecord)]
            if not chosen:  # the records as kept: a listing of thousands is neither read nor written
                uniform, answer = self.queue.store.uniform(), self.queue.jobs_text(everything=all)
            else:
                found = [data for data in self.queue.jobs(everything=all) if data.get("user") == who]
                keys = set(fields)
                uniform = not any(data.keys() != keys for data in found)  # (`all` is a parameter)
                answer = json.dumps(found)
            # No fields: some records were kept by another grid, and the client makes them anew.
            result = {"fields": fields if uniform else []}
            if raw:
                client.result_text(result, answer)
            else:
                client.frame("result", {**result, "text": answer})
            return 0
        found = self.queue.jobs(everything=all)
        if chosen:
            found = [data for data in found if data.get("user") == who]
        client.frame("result", found if shown is None else listing(found, int(shown), expand=expand))
        return 0

    def usage(self, client: Client) -> int:
        """Each user's fair-share standing (`grid jobs usage`): UserUsage records."""
        from grid_core.types import wire

        client.frame("result", wire().unstructure(self.queue.usage()))
        return 0

    def logs(self, client: Client, job_id: str, follow: bool = False, since: tuple[int, ...] = (0, 0),
             attempt: int | None = None) -> int:
        self._own(client, self.queue.matching(job_id), "read the output of")
        return self._follow(client, job_id, wait=follow, since=since, attempt=attempt)

    def stop_job(self, client: Client, job_id: str) -> int:
        from grid_core.types import wire

        self._own(client, self.queue.matching(job_id), "stop")
        client.frame("result", wire().unstructure(self.queue.stop(job_id)))
        return 0

    def hold_job(self, client: Client, job_id: str, held: bool = True) -> int:
        from grid_core.types import wire

        self._own(client, self.queue.matching(job_id), "hold or release")
        client.frame("result", wire().unstructure(self.queue.hold(job_id, held)))
        return 0

    def drain(self, client: Client) -> int:
        """For `cluster stop`: running jobs stop, recorded so; the answer is how many stay queued."""
        client.frame("result", {"queued": self.queue.drain()})
        return 0

    def _follow(self, client: Client, job_id: str, wait: bool = True, since: tuple[int, ...] = (0, 0),
                attempt: int | None = None) -> int:
        """Send the job's output after `since` until it ends (or until caught up, without wait);
        its exit status. A client that goes away ends only this: the job runs on.

        The output is the attempt's that counts (the last), or an earlier `attempt`'s. An `attempt`
        frame names the attempt that the output is of, and a client that reconnects sends it back
        as a third number in `since`; when a lost attempt's job runs again, another one says so and
        the new attempt's output follows from its start."""
        from grid_core.types import ACTIVE

        offsets, beat = (int(since[0]), int(since[1])), time.monotonic()
        following = int(since[2]) if len(since) > 2 else None  # the attempt whose output goes out
        told = set()  # attempts whose loss the client was told of
        while True:
            chunks, offsets, info = self.queue.store.read(job_id, offsets, attempt)
            if info is None:
                raise ServiceError(f"no job {job_id!r}" + (" (an array: name one of its jobs, such as "
                                                          f"{job_id}.0)" if self.queue.store.members(job_id) else ""))
            tried = len(info.attempts)
            if attempt is not None and not 1 <= attempt <= max(1, tried):
                raise ServiceError(f"job {job_id} has no attempt {attempt}: it has run {tried} time(s)")
            ended = attempt is not None and attempt <= tried and info.attempts[attempt - 1].state != "running"
            if ended:
                for stream, text in chunks:  # an attempt that ended: all there is of it
                    client.frame("out" if stream == "stdout" else "err", text)
                mine = info.attempts[int(attempt or 0) - 1]
                return int(mine.exit_status if mine.exit_status is not None else 1)
            if attempt is None and tried != following:  # the client learns which attempt its offsets are in
                client.frame("attempt", tried)
                if following is not None:  # a lost attempt's job runs again: its output starts anew
                    following, offsets = tried, (0, 0)
                    continue
                following = tried
            again = info.state == "queued" and tried and info.attempts[-1].state in ("lost", "claimed")
            if again and tried not in told:
                told.add(tried)
                client.frame("note", f"job {job_id}: {info.reason}; it runs again")
            for stream, text in chunks:
                client.frame("out" if stream == "stdout" else "err", text)
            if info.state not in ACTIVE:
                if info.exit_status is None and info.reason and wait:
                    client.frame("note", f"job {job_id} {info.state}: {info.reason}")
                return int(info.exit_status if info.exit_status is not None else 1)
            if not wait and not chunks:
                return 0
            if client.gone():
                raise OSError("the client has gone")
            if time.monotonic() - beat > BEAT_SECONDS:
                # The client tells a quiet job from a dead link by these; and a relay learns
                # that its SSH session closed only when it writes.
                client.frame("beat", None)
                beat = time.monotonic()
            if not chunks:
                time.sleep(POLL_SECONDS)

    def _agents(self) -> None:
        """Every few seconds, an agent for each node of the config. The first round waits for the
        first answer (or AGENT_SECONDS): a worker process per node starting at once took the CPU
        that `cluster start`'s last step, which asks this service, needs (16 nodes on 2 cores: that
        step took 6.0 s before, 3.9 s after; the last agent reported 4.6 s after start returned)."""
        self.answered.wait(AGENT_SECONDS)
        while True:
            try:
                self._ensure_agents()
            except Exception:  # one failed round must not end it
                traceback.print_exc()
            time.sleep(AGENT_SECONDS)


HANDLERS: dict[str, Callable[..., int]] = {
    "nodes": GridService.nodes, "status": GridService.status, "cluster_status": GridService.cluster_status,
    "offload": GridService.offload,
    "run": GridService.run, "jobs": GridService.jobs, "logs": GridService.logs, "stop_job": GridService.stop_job,
    "hold_job": GridService.hold_job, "drain": GridService.drain, "nodes_known": GridService.nodes_known,
    "rejoin_problems": GridService.rejoin_problems, "usage": GridService.usage,
}
# What only the cluster's owner and its admins may ask, in the words of the refusal.
MANAGERS_ONLY = {
    "drain": "stop the cluster", "nodes_known": "start the cluster",
    "offload.configure": "change the offload settings", "offload.hold": "hold a node",
    "offload.release": "release a node", "offload.boost": "request a boost", "offload.boost_release": "release a boost",
}


def listen(path: str, access: Any = None) -> socket.socket:
    """A listening Unix socket at path; a socket left by an earlier service is replaced.

    Without `access`: for this user alone (its directory is 0700 too). With it (the door): its
    directory is made, or must already be, this user's own and no link; with only `access.group`
    the directory (0710) and the socket (0660) belong to that group, else they are open to every
    local account (0711, 0666) and the check in _serve turns away those the config does not name."""
    mode = 0o600
    if access is not None:
        import grp
        import stat

        directory = os.path.dirname(path)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise ServiceError(f"{directory} is not this account's own directory; remove it, or give the "
                               "cluster another name")
        group_only = access.group is not None and not access.users and not access.admins
        gid = -1
        if group_only:
            try:
                gid = grp.getgrnam(access.group).gr_gid
            except KeyError:
                raise ServiceError(f"[access] group {access.group!r} is not a group on the head") from None
        os.chown(directory, -1, gid)
        os.chmod(directory, 0o710 if group_only else 0o711)
        mode = 0o660 if group_only else 0o666
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    if access is not None:
        os.chown(path, -1, gid)
        os.chmod(path, mode)
    sock.listen(128)
    return sock


# ---------------------------------------------------------------------- making sure it runs


def _end(ray: Any, namespace: str, names: list[str]) -> None:
    """End these actors for good (no restart), and wait until their names are free."""
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        except ValueError:  # not there
            continue
        deadline = time.monotonic() + CALL_TIMEOUT
        while time.monotonic() < deadline:
            try:
                ray.get_actor(name, namespace=namespace)
            except ValueError:
                break
            time.sleep(POLL_SECONDS)


def ensure(args: argparse.Namespace, config: dict[str, Any]) -> int:
    """Connect to Ray, create the service if it is not there, and wait until it answers."""
    import ray

    try:
        ray.init(address=args.address, namespace=args.namespace, logging_level=logging.ERROR,
                 log_to_driver=False, configure_logging=True)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own
        print(f"cannot connect to the Ray cluster at {args.address}: {exc}", file=sys.stderr)
        return SERVICE_ERROR
    if args.restart:
        from grid_plugin_ray_backend.agent import AGENT

        nodes = [n["name"] for n in config.get("nodes", []) if isinstance(n, dict) and "name" in n]
        _end(ray, args.namespace, [SERVICE, *(AGENT.format(name) for name in nodes)])
    service: Any = ray.remote(GridService).options(
        name=SERVICE, lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=-1, max_concurrency=32,
        resources={node_resource(args.head): 0.001},
    ).remote(config, args.namespace, args.head, args.address, args.directory)
    try:
        pid = ray.get(service.ready.remote(), timeout=CALL_TIMEOUT)
    except Exception as exc:
        print(f"the grid service did not start: {exc}", file=sys.stderr)
        return SERVICE_ERROR
    print(json.dumps({"pid": pid, "socket": socket_path(args.directory)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grid-service")
    for option in ("--address", "--namespace", "--head", "--directory"):
        parser.add_argument(option, required=True)
    parser.add_argument("--restart", action="store_true", help="end the service and the agents first")
    args = parser.parse_args(argv)
    try:
        config = json.loads(sys.stdin.buffer.read())
    except ValueError as exc:
        print(f"the config on stdin is not JSON: {exc}", file=sys.stderr)
        return SERVICE_ERROR
    if not isinstance(config, dict):
        print("the config on stdin is not a JSON object", file=sys.stderr)
        return SERVICE_ERROR
    return ensure(args, config)


if __name__ == "__main__":
    sys.exit(main())
