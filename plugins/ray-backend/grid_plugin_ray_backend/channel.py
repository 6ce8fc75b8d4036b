"""The CLI's one channel to the grid service on the head (service.py has the protocol).

On the head itself it connects to the service's Unix socket; from any other machine it asks the
transport grid already holds to the head (SSH) for a stream to that socket, which sshd opens
(`direct-streamlocal@openssh.com`), or where sshd does not forward Unix sockets runs relay.py on
the head. The traffic is encrypted and nothing new listens on the network. In the CLI the `ssh`
transport's connection lives in the user's keeper process (grid_plugin_ssh_paramiko/keeper.py),
so a status command from a laptop makes no handshake. Neither path starts a Ray driver or imports
Ray here. When no service answers on a running cluster, the channel starts it (service.ensure)
and asks again once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

from grid_core.access import channel_head
from grid_core.errors import GridError
from grid_core.types import TransportError
from grid_plugin_ray_backend import auth, records
from grid_plugin_ray_backend.frames import (
    CALL_TIMEOUT,
    DATA_CHUNK,
    SOCKET,
    STAGE_MIN,
    STAGING,
    Answer,
    ChannelLost,
    Frames,
    Output,
    data_frames,
    exchange,
)
from grid_plugin_ray_backend.layout import door_dir
from grid_plugin_ray_backend.relay import NO_SERVICE

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import ClusterConfig

ENSURE_TIMEOUT = 180.0


class NoService(Exception):
    """Nothing listens at the service's socket."""


@cache
def relay_source() -> str:
    from importlib import resources

    return resources.files("grid_plugin_ray_backend").joinpath("relay.py").read_text()


def call(config: ClusterConfig, cluster: Cluster, op: str, params: dict[str, Any] | None = None, *,
         on_output: Output | None = None, streaming: bool = False, data: bytes | None = None,
         on_data: Callable[[bytes], object] | None = None, on_bytes: Callable[[], object] | None = None,
         data_file: str | None = None, into: str | None = None,
         on_attempt: Callable[[int], object] | None = None) -> Answer:
    """Send one request and collect its answer; a refusal is a GridError with the service's reason.
    `streaming` requests (a followed job, data) have no time limit. `data`, or the bytes of
    `data_file`, go with the request (a big file is copied to the head as it is, without reading
    it here); bytes the service sends back go to `on_data`, or with `into` to that file (a staged
    answer is copied straight into it, without a second copy); `on_bytes()` is called whenever
    bytes arrive; `on_attempt(n)` when a followed job's output starts anew, as attempt n's. A broken
    connection is a ChannelLost, or the transport's TransportError."""
    if data_file is not None and (config.head.transport_name == "local" or os.path.getsize(data_file) < STAGE_MIN
                                  or config.access.shared):
        with open(data_file, "rb") as f:
            data, data_file = f.read(), None
    if into is not None:
        with open(into, "wb") as sink:
            return _call(config, cluster, op, params, on_output=on_output, streaming=streaming, data=data,
                         data_file=data_file, on_data=sink.write, on_bytes=on_bytes, into=into, on_attempt=on_attempt)
    return _call(config, cluster, op, params, on_output=on_output, streaming=streaming, data=data,
                 data_file=data_file, on_data=on_data, on_bytes=on_bytes, into=None, on_attempt=on_attempt)


def _call(config: ClusterConfig, cluster: Cluster, op: str, params: dict[str, Any] | None, *,
          on_output: Output | None, streaming: bool, data: bytes | None, data_file: str | None,
          on_data: Callable[[bytes], object] | None, on_bytes: Callable[[], object] | None,
          into: str | None, on_attempt: Callable[[int], object] | None = None) -> Answer:
    from grid_core.config import unstructure

    state = records.load(config.name)
    record = state.nodes.get(config.head.name)
    started = state.gcs_address is not None and record is not None  # by this user, who may start it again
    shared = config.access.shared  # the lab's people reach it by its door, each as themselves
    if not started and not shared:
        raise GridError(f"cluster {config.name!r} is not running; start it with `grid cluster start`")
    config_data = unstructure(config)
    local = config.head.transport_name == "local"
    # Big data goes by SFTP into the owner's directory; by the door, where others may not write, in frames.
    stage = not local and not shared
    body: dict[str, Any] = {"op": op, "params": params or {}, "config": config_data, "stage": stage}
    uploaded = None
    if data_file is not None:  # as staged answers come, by SFTP
        assert record is not None
        uploaded = body["staged_data"] = _upload(cluster, config, record.directory, data_file)
        streaming = True
    elif data is not None and stage and len(data) >= STAGE_MIN:
        assert record is not None
        uploaded = body["staged_data"] = _upload_bytes(cluster, config, record.directory, data)
    request = (json.dumps(body) + "\n").encode()
    if data is not None:
        request += data_frames(data) if uploaded is None else b""
        streaming = True
    path = f"{door_dir(config) if shared else record.directory}/{SOCKET}"  # type: ignore[union-attr]
    python = record.python if record is not None else config.head.python or "python3"
    timeout = None if streaming else CALL_TIMEOUT
    for attempt in range(2):
        frames = Frames(on_output, on_data, on_bytes, on_attempt)
        try:
            if local:
                _by_socket(path, request, frames, timeout)
            else:
                _remote(cluster, config, python, path, request, frames, timeout)
            break
        except NoService as exc:
            if not started:
                raise GridError(f"no grid service answers at {config.head.name}:{path}: cluster {config.name!r} "
                                "is not running (its owner starts it with `grid cluster start`)") from None
            if attempt:
                raise GridError(f"the grid service on {config.head.name} does not answer: {exc}") from None
            assert record is not None and state.gcs_address is not None
            ensure(config, cluster, state.gcs_address, record, config_data)
    answer = frames.answer
    # The service removes the request's staged data when it reads it: only a failed request may leave it.
    failed = answer.error is not None or not answer.ended
    leftovers = [*answer.staged, *([uploaded] if uploaded and failed else [])]
    try:
        if answer.error is not None:
            raise GridError(answer.error)
        if not answer.ended:
            raise ChannelLost(f"the grid service on {config.head.name} ended the connection before answering")
        for staged in answer.staged:
            if into is not None and os.path.getsize(into) == 0:  # nothing written yet: the copy is the file
                mode = os.stat(into).st_mode
                cluster.transport(config.head).get(staged, into)
                os.chmod(into, mode)  # the transport gives it the staged file's 0600
            else:
                _fetch(cluster, config, staged, on_data)
    finally:
        if leftovers:  # best effort: the service removes what is left after an hour
            with contextlib.suppress(GridError):
                cluster.transport(config.head).run(["rm", "-f", "--", *leftovers], timeout=60)
    return answer


def _upload(cluster: Cluster, config: ClusterConfig, directory: str, local: str) -> str:
    """A local file copied into a new file under STAGING in the head's directory; its path there."""
    import secrets

    remote = f"{directory}/{STAGING}/put-{secrets.token_hex(8)}"
    transport = cluster.transport(config.head)
    try:
        transport.put(local, remote)
    except TransportError:  # the service makes the directory when it starts; an older one did not
        transport.run(["mkdir", "-p", "-m", "700", "--", f"{directory}/{STAGING}"], timeout=60)
        transport.put(local, remote)
    return remote


def _upload_bytes(cluster: Cluster, config: ClusterConfig, directory: str, data: bytes) -> str:
    """data copied into a new 0600 file under STAGING in the head's directory; its path there."""
    import tempfile

    fd, local = tempfile.mkstemp(prefix="grid-put-")  # 0600, which the copy keeps
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return _upload(cluster, config, directory, local)
    finally:
        os.unlink(local)


def _fetch(cluster: Cluster, config: ClusterConfig, staged: str, on_data: Callable[[bytes], object] | None) -> None:
    """A staged answer's bytes, copied from the head by the transport, to on_data in chunks."""
    import tempfile

    fd, local = tempfile.mkstemp(prefix="grid-get-")
    os.close(fd)
    try:
        cluster.transport(config.head).get(staged, local)
        with open(local, "rb") as f:
            while on_data is not None and (chunk := f.read(DATA_CHUNK)):
                on_data(chunk)
    finally:
        os.unlink(local)


def _by_socket(path: str, request: bytes, frames: Frames, timeout: float | None) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise NoService(exc.strerror) from None
    except PermissionError:
        sock.close()
        raise GridError(f"you may not use the grid service at {path} (permission denied): the cluster's owner "
                        "lets people in under [access] in its config") from None
    exchange(sock, request, frames, timeout)


def route(cluster: Cluster, config: ClusterConfig, path: str) -> str:
    """How a request reaches the service from here: "socket" (on the head), "streamlocal" (sshd
    connects to its socket for us) or "relay" (relay.py on the head, where sshd does not)."""
    if config.head.transport_name == "local":
        return "socket"
    opener = getattr(cluster.transport(channel_head(config)), "open_unix", None)
    try:
        stream = opener(path) if opener is not None else None
    except ConnectionRefusedError:
        return "streamlocal"  # sshd tried to connect: it forwards
    if stream is None:
        return "relay"
    stream.close()
    return "streamlocal"


def _remote(cluster: Cluster, config: ClusterConfig, python: str, path: str, request: bytes,
            frames: Frames, timeout: float | None) -> None:
    """Through the transport to the head: a stream to the service's socket where the transport
    opens one (`open_unix`: no process starts on the head), else relay.py."""
    opener = getattr(cluster.transport(channel_head(config)), "open_unix", None)
    try:
        stream = opener(path) if opener is not None else None
    except ConnectionRefusedError as exc:
        raise NoService(exc.strerror) from None
    if stream is None:
        _by_relay(cluster, config, python, path, request, frames, timeout)
    else:
        exchange(stream, request, frames, timeout)


def _by_relay(cluster: Cluster, config: ClusterConfig, python: str, path: str, request: bytes,
              frames: Frames, timeout: float | None) -> None:
    result = cluster.transport(channel_head(config)).run(
        [python, "-c", relay_source(), path], stdin=request, timeout=timeout,
        on_output=lambda stream, text: frames.feed(text.encode()) if stream == "stdout" else None)
    if result.exit_status == NO_SERVICE:
        raise NoService(result.stderr.strip())
    if not frames.answer.ended and result.exit_status != 0:
        tail = result.stderr.strip().splitlines()[-1:] or [f"exit status {result.exit_status}"]
        raise ChannelLost(f"the relay to the grid service on {config.head.name} failed: {tail[0]}")


def ensure(config: ClusterConfig, cluster: Cluster, address: str, record: records.NodeRecord,
           config_data: dict[str, Any], *, restart: bool = False) -> None:
    """Start the service on the head if it is not running (a Ray driver there, for a few seconds);
    with `restart`, end it and the node agents first."""
    head = config.head
    argv = [record.python, "-m", "grid_plugin_ray_backend.service", "--address", address,
            "--namespace", config.backend.namespace, "--head", head.name, "--directory", record.directory,
            *(["--restart"] if restart else [])]
    env = {**config.backend.env, **auth.ray_env(record.directory, config.backend.tls)}
    result = cluster.transport(head).run(argv, env=env, stdin=json.dumps(config_data), timeout=ENSURE_TIMEOUT)
    if result.exit_status != 0:
        lines = [line.strip() for line in result.stderr.strip().splitlines() if line.strip()]
        raise GridError(f"the grid service did not start on {head.name}: "
                        f"{' | '.join(lines[-2:]) or f'exit status {result.exit_status}'}")
