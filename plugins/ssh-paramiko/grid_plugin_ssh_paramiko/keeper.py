"""The keeper: one process per user and cluster that holds the SSH connections, as OpenSSH's
ControlPersist does, so that later CLI calls need no paramiko import and no handshake.

The first CLI command on the cluster starts it as it begins: a fork of itself, as ssh's
ControlPersist master is (named grid-keeper), or, from a command that runs threads already,
`python -m grid_plugin_ssh_paramiko.keeper SOCKET` with the config as JSON on stdin. That command,
like every later one, talks to it over a Unix socket in a 0700 directory of the user's:
$XDG_RUNTIME_DIR/grid, else /tmp/grid-UID. The keeper refuses a peer of another uid
(SO_PEERCRED), answers a CLI that loaded another revision of the config by leaving (the CLI
starts a new one), and exits after `ssh.persist_seconds` with no call, when `grid cluster stop`
asks, or when its socket is gone.

One request a connection, a JSON line from the CLI (`op`, `revision`, `node`, ...), answered with
JSON lines: `["out"|"err", text]` while a command runs, then `["exit", status]`; `["done", info]`
for a copy or a question; `["error", kind, message]` for a failure. `unix` (a stream to a Unix
socket on the node, as sshd forwards it) answers `["done", true]` and then carries raw bytes
both ways until either end closes; `["done", false]`: sshd does not forward Unix sockets there.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grid_core.types import AuthError, CommandResult, HostKeyError, TransportError

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig, NodeConfig
    from grid_core.types import StreamRoute

START_SECONDS = 15.0  # for a new keeper to listen (an interpreter and paramiko's import)
READ_SIZE = 1 << 16
ERRORS: dict[str, type[TransportError]] = {"transport": TransportError, "hostkey": HostKeyError, "auth": AuthError}


class KeeperGone(Exception):
    """The keeper closed the connection before answering: it was leaving (idle, replaced)."""


# ---------------------------------------------------------------------- where it listens


def directory() -> Path:
    """The user's directory for keeper sockets, made 0700; refused when another user could use it."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(runtime, "grid") if runtime else Path(f"/tmp/grid-{os.geteuid()}")
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError as exc:
        raise TransportError(f"cannot use {path} for grid's SSH keeper: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise TransportError(f"{path} is not a directory of yours that only you can use (owner uid "
                             f"{info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}); remove it, or set "
                             "ssh.persist_seconds = 0 to connect without a keeper")
    return path


def socket_path(config: ClusterConfig) -> Path:
    """The keeper's socket for this cluster and this state directory (two test runs, or two
    GRID_STATE_DIRs, have two keepers). Short, as a Unix socket's path must be."""
    from grid_core.state import state_base

    key = _digest(f"{os.path.abspath(state_base())}\0{config.name}")
    return directory() / f"{key}.sock"


def revision(config: ClusterConfig) -> str:
    """A digest of the config's content and of the SSH files it is read with: a keeper serves only
    CLIs that loaded the same, so an edited known_hosts (a revoked key) or ~/.ssh/config is
    checked by a new connection, as the config is."""
    from grid_core.config import unstructure

    data = unstructure(config)
    data.pop("source", None)
    data.pop("notes", None)
    for name in ssh_files(config):
        try:
            info = os.stat(os.path.expanduser(name))
            data[f"file:{name}"] = [info.st_mtime_ns, info.st_size, info.st_ino]
        except OSError:
            data[f"file:{name}"] = None
    return _digest(json.dumps(data, sort_keys=True, default=str))


def _digest(text: str) -> str:
    """64 bits of two checksums: tells apart what changes by accident, and every command from
    another machine imports this module; hashlib (OpenSSL) cost each 3 ms to import."""
    import zlib

    data = text.encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def ssh_files(config: ClusterConfig) -> list[str]:
    """The files besides the config that a connection is made with, as the config names them."""
    files = {"~/.ssh/config", "~/.ssh/known_hosts", config.ssh.known_hosts or "",
             *(node.known_hosts or "" for node in config.nodes)} - {""}
    return sorted(files)


# ---------------------------------------------------------------------- the CLI's side


class KeptTransport:
    """The `ssh` transport of a CLI process: every call goes to the keeper, started on first use."""

    def __init__(self, node: NodeConfig, cluster: ClusterConfig) -> None:
        self.node, self.cluster = node, cluster
        self._revision: str | None = None

    def run(self, argv: Sequence[str], *, timeout: float | None = None, env: Mapping[str, str] | None = None,
            on_output: Callable[[str, str], None] | None = None, stdin: bytes | str | None = None) -> CommandResult:
        import binascii

        data = stdin.encode() if isinstance(stdin, str) else stdin
        request = {"argv": list(argv), "timeout": timeout, "env": dict(env) if env is not None else None,
                   "stdin": None if data is None else binascii.b2a_base64(data, newline=False).decode()}
        chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}
        with self._call("run", request) as frames:
            for frame in frames:
                if frame[0] in ("out", "err"):
                    name = "stdout" if frame[0] == "out" else "stderr"
                    chunks[name].append(frame[1])
                    if on_output is not None:
                        on_output(name, frame[1])
                elif frame[0] == "exit":
                    return CommandResult(int(frame[1]), "".join(chunks["stdout"]), "".join(chunks["stderr"]))
        raise TransportError(f"{self.node.name}: grid's SSH keeper ended the connection while a command ran")

    def put(self, local_path: str, remote_path: str) -> None:
        self._ask("put", {"local": os.path.abspath(local_path), "remote": remote_path})

    def get(self, remote_path: str, local_path: str) -> None:
        self._ask("get", {"local": os.path.abspath(local_path), "remote": remote_path})

    def open_unix(self, path: str) -> socket.socket | None:
        """As SshTransport.open_unix: a stream to a Unix socket on the node, through the keeper."""
        sock, reader = self._open("unix", {"path": path})
        try:
            frame = _frame(reader)
        except BaseException:
            sock.close()
            raise
        if frame == ["done", True]:
            return sock
        sock.close()
        if frame == ["done", False]:
            return None
        if frame[:2] == ["error", "refused"]:
            raise ConnectionRefusedError(errno.ECONNREFUSED, frame[2])
        _raise(frame, self.node.name)
        raise AssertionError("unreachable")

    def stream_route(self, path: str) -> StreamRoute:
        """How a process with nothing of this plugin loaded opens what open_unix does
        (grid_core/shortcut.py): the keeper's socket and open_unix's request. Void once a file the
        revision covers changes, as this keeper would then be for a new connection."""
        from grid_core.shortcut import stamp
        from grid_core.types import StreamRoute

        return StreamRoute(socket=str(socket_path(self.cluster)), hello=self._line("unix", {"path": path}).decode(),
                           ready=json.dumps(["done", True]), private=True,  # as directory() checks
                           checks=tuple(stamp(os.path.expanduser(name)) for name in ssh_files(self.cluster)))

    def info(self) -> dict[str, Any]:
        """The keeper's counters: its pid, SSH connections made, calls served, streams per node."""
        return dict(self._ask("info", {}))

    def warm(self) -> None:
        """Start a keeper in the background unless one listens, and return at once: the rest of
        the command's own start-up then runs beside the keeper's (a cold status command from another
        machine: 330 ms before, 280 ms with a new interpreter, about 210 ms with the fork)."""
        path = socket_path(self.cluster)
        if path not in _starting and not _listening(path):
            if self._revision is None:
                self._revision = revision(self.cluster)
            _spawn(path, self.cluster, self._revision)

    def close(self) -> None:
        """Nothing to release here: the keeper keeps the connection for the next command."""

    def disconnect(self) -> None:
        """End the keeper (`grid cluster stop`), when one runs; never starts one (one that warm()
        started is waited for first, so that it does not outlive the stop)."""
        path = socket_path(self.cluster)
        if path in _starting:
            with contextlib.suppress(TransportError):
                _start(path, self.cluster, self._revision or "")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(path))
                sock.sendall(json.dumps({"op": "stop"}).encode() + b"\n")
                sock.recv(READ_SIZE)
            except OSError:
                pass  # none runs

    # ------------------------------------------------------------------ talking to the keeper

    def _ask(self, op: str, request: dict[str, Any]) -> Any:
        with self._call(op, request) as frames:
            for frame in frames:
                if frame[0] == "done":
                    return frame[1]
        raise TransportError(f"{self.node.name}: grid's SSH keeper ended the connection before answering")

    class _Frames:
        def __init__(self, sock: socket.socket, reader: Any, node: str) -> None:
            self.sock, self.reader, self.node = sock, reader, node

        def __enter__(self) -> Iterator[list[Any]]:
            return self._frames()

        def __exit__(self, *exc: object) -> None:
            self.sock.close()

        def _frames(self) -> Iterator[list[Any]]:
            while True:
                frame = _frame(self.reader)
                if frame[0] == "error":
                    _raise(frame, self.node)
                yield frame

    def _call(self, op: str, request: dict[str, Any]) -> KeptTransport._Frames:
        sock, reader = self._open(op, request)
        return KeptTransport._Frames(sock, reader, self.node.name)

    def _config_revision(self) -> str:
        if self._revision is None:
            self._revision = revision(self.cluster)
        return self._revision

    def _line(self, op: str, request: dict[str, Any]) -> bytes:
        as_self = self.node.user is None and any(n.name == self.node.name and n.user for n in self.cluster.nodes)
        return json.dumps({"op": op, "revision": self._config_revision(), "node": self.node.name, "as_self": as_self,
                           **request}).encode() + b"\n"

    def _open(self, op: str, request: dict[str, Any]) -> tuple[socket.socket, Any]:
        """A connection to the keeper with the request sent and its first answer waiting. A keeper
        that is missing, dead, leaving or of another revision is replaced, once."""
        line = self._line(op, request)
        path = socket_path(self.cluster)
        for attempt in range(2):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                sock.sendall(line)
                reader = _Reader(sock)
                if reader.peek():  # the keeper answered (it closes at once when it leaves)
                    return sock, reader
            except OSError:
                pass
            sock.close()
            if attempt == 0:
                _start(path, self.cluster, self._config_revision())
        raise TransportError(f"grid's SSH keeper at {path} does not answer; see {path.with_suffix('.log')}, "
                             "or set ssh.persist_seconds = 0 to connect without it")


class _Reader:
    """Line reads on the keeper's socket that leave whatever follows unread (a `unix` stream)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def peek(self) -> bool:
        if not self.buffer:
            self.buffer = self.sock.recv(READ_SIZE, socket.MSG_PEEK)
        return bool(self.buffer)

    def readline(self) -> bytes:
        parts: list[bytes] = []
        self.buffer = b""
        while True:
            data = self.sock.recv(READ_SIZE, socket.MSG_PEEK)
            if not data:
                return b"".join(parts)
            end = data.find(b"\n")
            parts.append(self.sock.recv(len(data) if end < 0 else end + 1))  # what was peeked: the rest stays
            if end >= 0:
                return b"".join(parts)


def _frame(reader: _Reader) -> list[Any]:
    line = reader.readline()
    if not line:
        raise TransportError("grid's SSH keeper ended the connection before answering")
    frame = json.loads(line)
    assert isinstance(frame, list) and frame
    return frame


def _raise(frame: list[Any], node: str) -> None:
    if frame[0] == "error":
        raise ERRORS.get(frame[1], TransportError)(frame[2])
    raise TransportError(f"{node}: grid's SSH keeper answered {frame!r}")


_starting: dict[Path, tuple[Any, Any]] = {}  # keepers this process started, not yet seen ready: lock, pipe


def _listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
            return True
        except OSError:
            return False


def _spawn(path: Path, config: ClusterConfig, config_revision: str) -> None:
    """Start a keeper at `path` unless another CLI just did, without waiting for it (_start waits).
    The lock is held until it is ready, so two commands that start at once start one keeper."""
    import fcntl

    lock = open(path.with_suffix(".lock"), "w")  # noqa: SIM115  # released by _start, or at exit
    fcntl.flock(lock, fcntl.LOCK_EX)
    if _listening(path):  # another CLI started it while we waited for the lock; a wrong revision is retried
        lock.close()
        return
    # A fork, as OpenSSH's ControlPersist makes its master: it has this interpreter and grid's
    # modules already (a new interpreter took 60 ms more). Only a process with one thread forks
    # safely (another thread may hold a lock the child would wait on forever).
    if threading.active_count() == 1:
        ready = _fork(path, config, config_revision, lock)
    else:
        ready = _exec(path, config, config_revision)
    _starting[path] = (lock, ready)


def _fork(path: Path, config: ClusterConfig, config_revision: str, lock: Any) -> Any:
    """The keeper as a daemon forked from this process; the pipe it says "ready" on."""
    for stream in (sys.stdout, sys.stderr):  # else the child would hold, and could write, this output again
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        status = 1
        try:
            lock.close()  # the lock is the command's: held by the keeper, it would outlast the start
            os.close(read_fd)
            os.setsid()
            if os.fork() == 0:  # the grandchild keeps; init adopts it, so it never waits as a zombie
                devnull = os.open(os.devnull, os.O_RDWR)
                log = os.open(path.with_suffix(".log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                for fd, target in ((0, devnull), (1, devnull), (2, log)):  # the command's pipes are not its
                    os.dup2(target, fd)
                os.close(devnull)
                os.close(log)
                import signal

                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # not the command's handlers
                    signal.signal(signum, signal.SIG_DFL)
                with contextlib.suppress(OSError):  # its name in ps -e and top; its command line stays the command's
                    Path("/proc/self/comm").write_text("grid-keeper")

                def say(line: str) -> None:
                    os.write(write_fd, line.encode())
                    os.close(write_fd)

                status = _keep(path, config, config_revision, say)
            else:
                status = 0
        finally:
            os._exit(status)  # nothing of the command's own exit (atexit, buffers) runs twice
    os.close(write_fd)
    os.waitpid(child, 0)
    return os.fdopen(read_fd, "rb")


def _exec(path: Path, config: ClusterConfig, config_revision: str) -> Any:
    """The keeper as a new interpreter (main() below); the pipe it says "ready" on."""
    import subprocess

    from grid_core.config import unstructure

    with open(path.with_suffix(".log"), "ab") as log:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "grid_plugin_ssh_paramiko.keeper", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    assert keeper.stdin is not None
    payload = {"config": unstructure(config), "source": config.source, "revision": config_revision}
    keeper.stdin.write(json.dumps(payload).encode())
    keeper.stdin.close()
    keeper.returncode = 0  # it outlives this process by design: no "still running" warning
    return keeper.stdout


def _start(path: Path, config: ClusterConfig, config_revision: str) -> None:
    """Start a keeper at `path` (or take the one warm() started), and wait until it listens."""
    import select

    if path not in _starting:
        _spawn(path, config, config_revision)
    if path not in _starting:
        return
    lock, pipe = _starting.pop(path)
    with lock, pipe:
        ready, _, _ = select.select([pipe], [], [], START_SECONDS)
        answer = pipe.readline() if ready else b""
    if answer.strip() != b"ready":
        said = answer.decode(errors="replace").strip() or "no answer"
        raise TransportError(f"grid's SSH keeper did not start: {said}; see {path.with_suffix('.log')}")


# ---------------------------------------------------------------------- the keeper's side


class Keeper:
    """Serves CLI calls on one socket with one SshTransport per node, until idle or told to go."""

    def __init__(self, path: Path, config: ClusterConfig, config_revision: str) -> None:
        from grid_plugin_ssh_paramiko.transport import SshTransport

        class Counted(SshTransport):
            def _connect_chain(inner, *args: Any) -> Any:  # `self` is the keeper
                self.connects += 1
                return super()._connect_chain(*args)

        self.path, self.config, self.revision = path, config, config_revision
        self.idle = config.ssh.persist_seconds
        self.Counted = Counted
        self.transports = {node.name: Counted(node, config) for node in config.nodes}
        self.connects = self.served = self.active = 0
        self.busy: dict[str, int] = {}  # calls under way per node
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.leaving = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.inode = 0

    def _transport(self, node: str, as_self: bool) -> Any:
        """The node's connection; `as_self`: logged in as this user rather than as its config's
        `user` (the lab's people reach the head as themselves: grid_core/access.py)."""
        if not as_self or node not in self.transports:
            return self.transports.get(node)
        import attrs

        with self.lock:
            if f"{node}\0self" not in self.transports:
                own = attrs.evolve(self.transports[node].node, user=None)
                self.transports[f"{node}\0self"] = self.Counted(own, self.config)
            return self.transports[f"{node}\0self"]

    def bind(self) -> None:
        # A socket here that nobody answers is a dead keeper's (killed): take its place.
        if _listening(self.path):
            raise SystemExit("a keeper already listens at this socket")
        self.path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            self.listener.bind(str(self.path))
        finally:
            os.umask(old)
        self.inode = self.path.stat().st_ino
        self.listener.listen(64)
        self.listener.settimeout(1.0)

    def serve(self) -> None:
        while not self.leaving.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                with self.lock:
                    idle = self.active == 0 and time.monotonic() - self.last >= self.idle
                if idle or not self._still_mine():
                    self.leave()
                continue
            except OSError:
                break  # the listener was closed by leave()
            with self.lock:
                self.active += 1
                self.last = time.monotonic()
            threading.Thread(target=self._serve_one, args=(conn,), daemon=True).start()
        self.leave()
        while True:  # calls under way finish first: a followed job's stream must not break here
            with self.lock:
                if self.active == 0:
                    break
            time.sleep(0.2)
        for transport in self.transports.values():
            transport.close()

    def leave(self) -> None:
        """Stop listening and remove the socket (when it is still this keeper's), then end."""
        with self.lock:
            if self.leaving.is_set():
                return
            if self._still_mine():
                self.path.unlink(missing_ok=True)
            self.listener.close()
            self.leaving.set()

    def _still_mine(self) -> bool:
        try:
            return self.path.stat().st_ino == self.inode
        except OSError:
            return False

    def _serve_one(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            pid, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.geteuid():
                sys.stderr.write(f"refused a connection from uid {uid} (pid {pid})\n")
                _send(conn, ["error", "transport", f"grid's SSH keeper serves only uid {os.geteuid()}"])
                return
            line = reader.readline()
            if not line:
                return  # a probe: a CLI checking that a keeper listens
            request = json.loads(line)
            op = request.get("op")
            if op == "stop":
                _send(conn, ["done", True])
                self.leave()
                return
            if request.get("revision") != self.revision:
                self.leave()  # the CLI starts a keeper for its config once this one's socket is gone
                return
            transport = self._transport(str(request.get("node", "")), bool(request.get("as_self")))
            if transport is None:
                _send(conn, ["error", "transport", f"grid's SSH keeper knows no node {request.get('node')!r}"])
                return
            request["node"] = f"{request['node']}\0self" if request.get("as_self") else request["node"]
            handler = getattr(self, f"_op_{op}", None)
            if handler is None:
                _send(conn, ["error", "transport", f"grid's SSH keeper has no operation {op!r}"])
                return
            with self.lock:
                self.served += 1
                self.busy[request["node"]] = self.busy.get(request["node"], 0) + 1
            try:
                handler(conn, reader, transport, request)
            except TransportError as exc:
                with self.lock:  # a fresh connection next time, unless other calls still use this one
                    alone = self.busy[request["node"]] == 1
                if alone:
                    transport.reset()
                kind = next((k for k, v in ERRORS.items() if type(exc) is v), "transport")
                _send(conn, ["error", kind, str(exc)])
            finally:
                with self.lock:
                    self.busy[request["node"]] -= 1
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"a call failed: {exc}\n")
        finally:
            reader.close()
            conn.close()
            with self.lock:
                self.active -= 1
                self.last = time.monotonic()

    def _op_run(self, conn: socket.socket, reader: Any, transport: Any, request: dict[str, Any]) -> None:
        import binascii

        stdin = None if request["stdin"] is None else binascii.a2b_base64(request["stdin"])
        send_lock = threading.Lock()

        def output(stream: str, text: str) -> None:
            with send_lock:
                _send(conn, ["out" if stream == "stdout" else "err", text])

        result = transport.run(request["argv"], timeout=request["timeout"], env=request["env"],
                               on_output=output, stdin=stdin)
        _send(conn, ["exit", result.exit_status])

    def _op_put(self, conn: socket.socket, reader: Any, transport: Any, request: dict[str, Any]) -> None:
        transport.put(request["local"], request["remote"])
        _send(conn, ["done", True])

    def _op_get(self, conn: socket.socket, reader: Any, transport: Any, request: dict[str, Any]) -> None:
        transport.get(request["remote"], request["local"])
        _send(conn, ["done", True])

    def _op_info(self, conn: socket.socket, reader: Any, transport: Any, request: dict[str, Any]) -> None:
        with self.lock:
            info = {"pid": os.getpid(), "revision": self.revision, "connects": self.connects, "served": self.served,
                    "persist_seconds": self.idle,
                    "streamlocal": {name: t.streamlocal for name, t in self.transports.items()}}
        _send(conn, ["done", info])

    def _op_unix(self, conn: socket.socket, reader: Any, transport: Any, request: dict[str, Any]) -> None:
        try:
            stream = transport.open_unix(request["path"])
        except ConnectionRefusedError as exc:
            _send(conn, ["error", "refused", str(exc.strerror or exc)])
            return
        if stream is None:
            _send(conn, ["done", False])
            return
        _send(conn, ["done", True])

        def upstream() -> None:
            # The CLI never half-closes: its end closing means it is gone (the service reads it so).
            try:
                while data := reader.read1(READ_SIZE):
                    stream.sendall(data)
            except OSError:
                pass
            stream.close()

        threading.Thread(target=upstream, daemon=True).start()
        try:
            while data := stream.recv(READ_SIZE):
                conn.sendall(data)
        except OSError:
            pass
        stream.close()


def _send(conn: socket.socket, frame: list[Any]) -> None:
    conn.sendall(json.dumps(frame).encode() + b"\n")


def _keep(path: Path, config: ClusterConfig, config_revision: str, say: Callable[[str], object]) -> int:
    """Be the keeper: bind, `say` "ready" (or why not), serve until idle or stopped."""
    from grid_plugin_ssh_paramiko.target import import_paramiko

    import_paramiko()
    keeper = Keeper(path, config, config_revision)
    try:
        keeper.bind()
    except (OSError, SystemExit) as exc:
        with contextlib.suppress(OSError):
            say(f"cannot listen at {path}: {exc}\n")
        return 1
    with contextlib.suppress(OSError):  # a CLI that started it and ended before it was ready
        say("ready\n")
    keeper.serve()
    return 0


def main() -> int:
    """A keeper in a new interpreter: its config on stdin, "ready" on stdout (a CLI with threads)."""
    from grid_core.config import structure

    path = Path(sys.argv[1])
    payload = json.loads(sys.stdin.buffer.read())

    def say(line: str) -> None:
        sys.stdout.write(line)
        sys.stdout.flush()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # the CLI's pipe closes: it waits for nothing more

    return _keep(path, structure(payload["config"], payload["source"]), payload["revision"], say)


if __name__ == "__main__":
    sys.exit(main())
