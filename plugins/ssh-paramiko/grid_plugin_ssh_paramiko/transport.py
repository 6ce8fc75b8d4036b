"""The `ssh` transport: commands and SFTP copies over one paramiko connection per node.

The core keeps one transport per node per process, so this object keeps one SSHClient, opened on
first use (never in the constructor: the core creates transports under a lock) and reused by
every command; a connection that has died is reopened once. Every failure becomes a
TransportError (HostKeyError, AuthError) whose message says why and, where it can, what to do.
"""

from __future__ import annotations

import codecs
import errno
import logging
import os
import re
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import paramiko

from grid_core.builtin.local import command_limit, stdin_bytes
from grid_core.types import AuthError, CommandResult, HostKeyError, TransportError

from . import host_keys
from .target import SshOptions, SshTarget, resolve_target

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig, NodeConfig

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
READ_SIZE = 65536
KEEPALIVE_SECONDS = 30  # long-lived processes (the offload controller) keep NAT and firewalls open
LOST_EXIT_STATUS = 255  # killed by a signal or the connection dropped: what OpenSSH reports
QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)  # Linux only; 0 where the option does not exist
KILL_SECONDS = 5.0  # for the kill of a timed-out command's process group
LEADER_MARK = "grid-pgid="
NEWLINE_VAR = "__grid_nl"  # shell variables of the remote prologue; never exported
ENV_LINE_VAR = "__grid_env"
# Reads the first line of stdin, a line of `export NAME='value' ...` that env_line wrote, and
# runs it. A shell's `read` takes a pipe's bytes one at a time, so the rest of stdin is left to
# the command.
ENV_PROLOGUE = (f"{NEWLINE_VAR}='\n'; IFS= read -r {ENV_LINE_VAR} || "
                "{ echo 'grid: the environment did not arrive on stdin' >&2; exit 126; }; "
                f'eval "${ENV_LINE_VAR}"')


def remote_command(argv: Sequence[str], env: Mapping[str, str] | None = None, *, leader: bool = False) -> str:
    """One shell command line that runs argv literally.

    No value of env is in it: command lines are public (`ps`), and env holds secrets. With env,
    the line first reads env_line(env) from the command's stdin (no AcceptEnv needed). With
    leader, it reports its process group first (see _Leader).
    """
    if not argv:
        raise TransportError("no command to run")
    for name in env or {}:
        if not ENV_NAME.match(name):
            raise TransportError(f"environment variable name {name!r} is not valid")
    steps = [f"echo {LEADER_MARK}$$ >&2"] if leader else []
    if env:
        steps.append(ENV_PROLOGUE)
    command = shlex.join(argv)
    return "; ".join([*steps, f"exec {command}"]) if steps else command


def env_line(env: Mapping[str, str]) -> bytes:
    """The line ENV_PROLOGUE reads: every variable, each value single-quoted and newlines as a
    variable, so that any value but one with NUL (which no environment can hold) arrives intact."""
    words = []
    # A variable of the prologue's own name is set last, after the values that use it.
    for name, value in sorted(env.items(), key=lambda item: item[0] == NEWLINE_VAR):
        if "\0" in value:
            raise TransportError(f"environment variable {name} holds a NUL character")
        quoted = f'"${NEWLINE_VAR}"'.join(shlex.quote(part) for part in value.split("\n"))
        words.append(f"{name}={quoted}")
    return stdin_bytes("export " + " ".join(words) + "\n")


class SshTransport:
    """Runs commands and copies files on one node over SSH."""

    def __init__(self, node: NodeConfig, cluster: ClusterConfig) -> None:
        self.node = node
        self.settings = cluster.ssh
        self._lock = threading.Lock()
        self._resolved: tuple[SshTarget, SshOptions] | None = None
        self._client: paramiko.SSHClient | None = None
        self._jump_clients: list[paramiko.SSHClient] = []
        self._closed = False
        self.streamlocal: bool | None = None  # does sshd forward Unix sockets? None: not known yet

    # ------------------------------------------------------------------ Transport

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_output: Callable[[str, str], None] | None = None,
        stdin: bytes | str | None = None,
    ) -> CommandResult:
        remote_command(argv, env)  # a bad command or name fails before connecting
        _, options = self._resolve()
        limit = command_limit(timeout or options.command_timeout)
        leader = _Leader() if limit else None
        command = remote_command(argv, env, leader=leader is not None)
        data = (env_line(env) if env else b"") + (stdin_bytes(stdin) if stdin is not None else b"")
        channel = self._open_session()
        deadline = time.monotonic() + limit if limit else None  # the connect timeout covers connecting
        try:
            channel.exec_command(command)
            _feed(channel, data)
            stdout, stderr = _collect(channel, deadline, on_output, leader)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not channel.status_event.wait(remaining):
                raise TimeoutError
        except TimeoutError:
            if leader is not None and leader.pgid:
                self._kill_group(leader.pgid)
            raise TransportError(f"command timed out after {limit:g} s on {self.node.name}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(f"{self.node.name}: connection lost while running a command: {exc}") from None
        finally:
            channel.close()
        status = channel.exit_status
        return CommandResult(LOST_EXIT_STATUS if status < 0 else status, stdout, stderr)

    def _kill_group(self, pgid: int) -> None:
        """End a timed-out command and everything it started: closing its channel does not (sshd
        only closes the pipes, and a `sleep` that never writes never notices)."""
        kill = f"kill -KILL -- -{pgid} 2>/dev/null || kill -KILL {pgid} 2>/dev/null; exit 0"
        try:
            channel = self._open_session()
            try:
                channel.exec_command(kill)
                channel.status_event.wait(KILL_SECONDS)
            finally:
                channel.close()
        except (TransportError, paramiko.SSHException, EOFError, OSError):
            pass  # the connection is gone too; the timeout is what the caller hears about

    def put(self, local_path: str, remote_path: str) -> None:
        mode = os.stat(local_path).st_mode & 0o777 if os.path.exists(local_path) else None
        with self._sftp(f"copy {local_path} to {self.node.name}:{remote_path}") as sftp:
            sftp.put(local_path, remote_path)
            if mode is not None:  # as scp does: the copy keeps the file's permissions
                sftp.chmod(remote_path, mode)

    def get(self, remote_path: str, local_path: str) -> None:
        with self._sftp(f"copy {self.node.name}:{remote_path} to {local_path}") as sftp:
            sftp.get(remote_path, local_path)
            os.chmod(local_path, (sftp.stat(remote_path).st_mode or 0o644) & 0o777)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._disconnect()

    def reset(self) -> None:
        """Drop the connection after a failure; the next call connects anew. A kept connection
        (keeper.py) to a host whose link went down would otherwise wait out TCP's retransmissions
        long after the link is back."""
        with self._lock:
            self._disconnect()

    def open_unix(self, path: str) -> paramiko.Channel | None:
        """A stream to the Unix socket at `path` on the node, which sshd connects to for us
        (`direct-streamlocal@openssh.com`, as `ssh -L local:remote.sock`), so no process starts
        there. None when this sshd does not forward Unix sockets (AllowStreamLocalForwarding no,
        or not OpenSSH); ConnectionRefusedError when nothing listens at `path`."""
        if self.streamlocal is False:
            return None
        _, options = self._resolve()
        transport = self._connected().get_transport()
        assert transport is not None
        try:
            channel = _open_streamlocal(transport, path, options.connect_timeout)
        except paramiko.ChannelException as exc:
            # OpenSSH answers "connect failed" both for a socket nobody listens at and for a
            # refused forward. Once a stream has opened, it is the first; before, a socket file
            # at the path that refused tells that sshd does not forward (or, rarely, that the
            # service died and left its socket: then the relay says so, and this node keeps to it).
            probe = None if self.streamlocal else self.run(["test", "-S", path], timeout=options.connect_timeout)
            if probe is not None and probe.exit_status == 0:
                self.streamlocal = False
                return None
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens at {path} ({exc.text})") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(f"{self.node.name}: cannot open a stream to {path}: {exc}") from None
        self.streamlocal = True
        return channel

    # ------------------------------------------------------------------ connection

    def _resolve(self) -> tuple[SshTarget, SshOptions]:
        if self._resolved is None:
            self._resolved = resolve_target(self.node, self.settings)
        return self._resolved

    def _connected(self) -> paramiko.SSHClient:
        """The open client, connecting (once, for all threads) when there is none or it died."""
        with self._lock:
            if self._closed:
                raise TransportError(f"the transport to {self.node.name} is closed")
            transport = self._client.get_transport() if self._client else None
            if self._client is None or transport is None or not transport.is_active():
                self._disconnect()
                target, options = self._resolve()
                try:
                    self._client = self._connect_chain(target, options)
                except BaseException:
                    self._disconnect()  # jump hosts already connected
                    raise
            return self._client

    def _connect_chain(self, target: SshTarget, options: SshOptions) -> paramiko.SSHClient:
        """Connect through each ProxyJump hop in turn (a direct-tcpip channel of the previous one)."""
        deadline = time.monotonic() + options.connect_timeout
        sock: socket.socket | paramiko.Channel | None = None
        previous: SshTarget | None = None
        for hop in (*target.jumps, target):
            if previous is None:
                sock = _dial(hop, options.connect_timeout)
            else:
                sock = self._jump_channel(previous, hop, deadline)
            client = _handshake(hop, sock, options, deadline)
            if hop is not target:
                self._jump_clients.append(client)
            previous = hop
        return client

    def _jump_channel(self, via: SshTarget, hop: SshTarget, deadline: float) -> paramiko.Channel:
        jump_transport = self._jump_clients[-1].get_transport()
        assert jump_transport is not None
        try:
            return jump_transport.open_channel(
                "direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0),
                timeout=max(0.1, deadline - time.monotonic()),
            )
        except (paramiko.SSHException, OSError) as exc:
            raise TransportError(f"cannot reach {hop.hostname}:{hop.port} through jump host {via.alias}: {exc}") \
                from None

    def _disconnect(self) -> None:
        for client in (self._client, *reversed(self._jump_clients)):
            if client is not None:
                client.close()
        self._client, self._jump_clients = None, []

    def _open_session(self) -> paramiko.Channel:
        _, options = self._resolve()
        for attempt in (1, 2):
            client = self._connected()
            transport = client.get_transport()
            try:
                assert transport is not None
                return transport.open_session(timeout=options.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                # Reconnect only when the connection itself died: closing a live one would
                # break the other commands running on it.
                if attempt == 2 or (transport is not None and transport.is_active()):
                    raise TransportError(f"{self.node.name}: cannot open an SSH session: {exc}") from None
        raise AssertionError("unreachable")

    @contextmanager
    def _sftp(self, what: str) -> Iterator[paramiko.SFTPClient]:
        channel = self._open_session()
        try:
            channel.invoke_subsystem("sftp")
            sftp = paramiko.SFTPClient(channel)
        except paramiko.SSHException as exc:
            channel.close()
            raise TransportError(f"cannot {what}: the node offers no SFTP ({exc})") from None
        _, options = self._resolve()
        channel.settimeout(options.command_timeout)
        try:
            yield sftp
        except OSError as exc:
            raise TransportError(f"cannot {what}: {exc.strerror or exc}") from None
        except (paramiko.SSHException, EOFError) as exc:
            raise TransportError(f"cannot {what}: {exc}") from None
        finally:
            sftp.close()


# ---------------------------------------------------------------------- connecting


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it reads at once instead of up to 40 ms later.

    Right after authentication OpenSSH's sshd sends small packets the client does not answer
    (the hostkeys-00 notice, auth debug lines). Linux delays the ACK for them, and sshd's Nagle
    then holds back its reply to our channel-open until that ACK comes: 40 ms on every first
    command, more than the whole handshake. Re-arming TCP_QUICKACK after each read sends a
    pending ACK immediately (the option is not sticky, so it is set every time).
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        self.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
        return data


def _dial(target: SshTarget, timeout: float) -> socket.socket:
    """A TCP connection, with the failure put as a person would want to read it."""
    where = f"cannot connect to {target.alias}"
    if target.alias != target.hostname or target.port != 22:
        where += f" ({target.hostname}:{target.port})"
    try:
        sock = socket.create_connection((target.hostname, target.port), timeout=timeout)
    except socket.gaierror as exc:
        raise TransportError(f"{where}: cannot resolve host name ({exc.strerror})") from None
    except TimeoutError:
        raise TransportError(f"{where}: timed out after {timeout:g} s") from None
    except ConnectionRefusedError:
        raise TransportError(f"{where}: connection refused (is sshd running and listening on that port?)") from None
    except OSError as exc:
        reason = {errno.EHOSTUNREACH: "no route to host", errno.ENETUNREACH: "network is unreachable"}.get(
            exc.errno or 0, exc.strerror or str(exc))
        raise TransportError(f"{where}: {reason}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not QUICKACK:
        return sock
    return _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())


def _handshake(
    target: SshTarget, sock: socket.socket | paramiko.Channel, options: SshOptions, deadline: float
) -> paramiko.SSHClient:
    """Key exchange, host-key check and authentication on an open socket, within the deadline."""
    client = paramiko.SSHClient()
    remaining = max(0.1, deadline - time.monotonic())
    try:
        known = host_keys.load(client, options.known_hosts)
        client.set_missing_host_key_policy(host_keys.CheckedPolicy(target, known, options.accept_new))
        client.connect(
            target.host_key_alias or target.hostname,
            port=target.port,
            username=target.user,
            key_filename=list(target.key_files) or None,  # type: ignore[arg-type]  # stubs omit list[str]
            allow_agent=not target.only_named_keys,
            look_for_keys=not target.only_named_keys,
            sock=sock,
            timeout=remaining,
            banner_timeout=remaining,
            auth_timeout=remaining,
            channel_timeout=options.connect_timeout,
        )
    except BaseException as exc:
        client.close()  # paramiko leaves its transport thread running after a failed connect
        if isinstance(sock, socket.socket):
            sock.close()
        raise _explain(exc, target, options) from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(KEEPALIVE_SECONDS)
    return client


def _explain(exc: BaseException, target: SshTarget, options: SshOptions) -> BaseException:
    """The TransportError a person should see for a failed handshake."""
    if isinstance(exc, TransportError):  # ours, from the host-key policy
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(host_keys.changed_message(target, exc.key, exc.expected_key, options.known_hosts))
    if isinstance(exc, paramiko.PasswordRequiredException):
        return AuthError(f"authentication failed for {target.user}@{target.hostname}: a key is encrypted ({exc}); "
                         "load it into ssh-agent, or name an unencrypted key")
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthError(f"authentication failed for {target.user}@{target.hostname} ({target.keys_label()})")
    if isinstance(exc, FileNotFoundError):
        return AuthError(f"authentication failed for {target.user}@{target.hostname}: key file "
                         f"{exc.filename or ', '.join(target.key_files)} not found")
    if isinstance(exc, TimeoutError) or "timeout" in str(exc).lower():
        return TransportError(f"{target.alias} ({target.hostname}:{target.port}) did not complete the SSH "
                              f"handshake: timed out after {options.connect_timeout:g} s")
    if isinstance(exc, paramiko.SSHException | EOFError | OSError):
        detail = str(exc) or type(exc).__name__
        return TransportError(f"SSH handshake with {target.alias} ({target.hostname}:{target.port}) failed: {detail}")
    return exc


def _quiet_open_failures(record: logging.LogRecord) -> bool:
    """paramiko logs a refused channel as an ERROR; open_unix turns it into its own answer (no
    service yet, or the relay), which is no error for the user to read."""
    return "open FAILED" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_quiet_open_failures)


def _open_streamlocal(transport: paramiko.Transport, path: str, timeout: float) -> paramiko.Channel:
    """Transport.open_channel for `direct-streamlocal@openssh.com` (RFC 4254 section 5.1 with
    OpenSSH's fields: the socket's path, a reserved string and a reserved uint32), which paramiko's
    open_channel cannot write. Its waiting is the same."""
    from paramiko.channel import Channel
    from paramiko.common import cMSG_CHANNEL_OPEN
    from paramiko.message import Message

    if not transport.is_active():
        raise paramiko.SSHException("SSH session not active")
    with transport.lock:
        window = transport._sanitize_window_size(None)  # type: ignore[attr-defined]
        packet = transport._sanitize_packet_size(None)  # type: ignore[attr-defined]
        chanid = transport._next_channel()  # type: ignore[attr-defined]
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string("direct-streamlocal@openssh.com")
        m.add_int(chanid)
        m.add_int(window)
        m.add_int(packet)
        m.add_string(path)
        m.add_string("")
        m.add_int(0)
        channel = Channel(chanid)
        transport._channels.put(chanid, channel)  # type: ignore[attr-defined]
        transport.channel_events[chanid] = event = threading.Event()  # type: ignore[attr-defined]
        transport.channels_seen[chanid] = True  # type: ignore[attr-defined]
        channel._set_transport(transport)  # type: ignore[attr-defined]
        channel._set_window(window, packet)  # type: ignore[attr-defined]
    transport._send_user_message(m)  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while not event.wait(0.1):
        if not transport.is_active():
            raise transport.get_exception() or paramiko.SSHException("the SSH connection ended")
        if time.monotonic() > deadline:
            raise paramiko.SSHException("timeout opening a channel")
    opened = transport._channels.get(chanid)  # type: ignore[attr-defined]
    if opened is None:
        raise transport.get_exception() or paramiko.SSHException("unable to open a channel")
    return opened  # type: ignore[no-any-return]


# ---------------------------------------------------------------------- reading output


class _Leader:
    """The remote process group of a timed command, so that a timeout can end all of it.

    sshd starts each session's command in a new session (setsid), so the shell it runs leads a
    process group whose id is its pid. The wrapped command reports that pid as the first line of
    stderr, then execs the command in the same process; _collect strips the line.
    """

    def __init__(self) -> None:
        self.pgid = 0
        self._pending: str | None = ""  # stderr until the mark's line is complete; None after

    def strip(self, text: str) -> str:
        """stderr text less the mark's line (held back until that line is whole)."""
        if self._pending is None:
            return text
        self._pending += text
        *lines, tail = self._pending.split("\n")
        for i, line in enumerate(lines):  # a login shell's rc file may print before the mark
            if line.startswith(LEADER_MARK) and line[len(LEADER_MARK):].isdigit():
                self.pgid, self._pending = int(line[len(LEADER_MARK):]), None
                return "".join(f"{before}\n" for before in lines[:i]) + "\n".join([*lines[i + 1:], tail])
        return ""

    def flush(self) -> str:
        pending, self._pending = self._pending or "", None
        return pending


def _feed(channel: paramiko.Channel, data: bytes) -> None:
    """Write data to the command's stdin, then EOF. From a thread when there is data: a command
    that writes while it reads would otherwise fill its output window while we still wrote."""

    def send() -> None:
        try:
            # Not channel.sendall: it slices the rest of its bytes after each packet, a copy
            # each time, which makes sending megabytes quadratic.
            view = memoryview(data)
            while view:
                sent = channel.send(view)  # type: ignore[arg-type]  # paramiko takes any buffer
                if not sent:
                    raise EOFError
                view = view[sent:]
            channel.shutdown_write()
        except (paramiko.SSHException, EOFError, OSError):
            pass  # the command stopped reading, or the channel closed (its end or a timeout)

    if data:
        threading.Thread(target=send, name="grid-ssh-stdin", daemon=True).start()
    else:
        channel.shutdown_write()


def _collect(
    channel: paramiko.Channel, deadline: float | None, on_output: Callable[[str, str], None] | None,
    leader: _Leader | None = None,
) -> tuple[str, str]:
    """Read stdout and stderr until the remote side closes them, streaming to on_output."""
    decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in ("stdout", "stderr")}
    chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def take(name: str, data: bytes, final: bool = False) -> None:
        text = decoders[name].decode(data, final)
        if name == "stderr" and leader is not None:
            text = leader.strip(text) + (leader.flush() if final else "")
        if text:
            chunks[name].append(text)
            if on_output is not None:
                on_output(name, text)

    def drain() -> bool:
        got = False
        while channel.recv_ready():
            take("stdout", channel.recv(READ_SIZE))
            got = True
        while channel.recv_stderr_ready():
            take("stderr", channel.recv_stderr(READ_SIZE))
            got = True
        return got

    while True:
        if drain():
            continue
        if channel.eof_received or channel.closed:
            drain()  # data that arrived between the last read and the EOF
            break
        wait = 1.0 if deadline is None else deadline - time.monotonic()
        if wait <= 0:
            raise TimeoutError
        # The channel's fileno is a pipe paramiko sets on data or EOF on either stream.
        select.select([channel], [], [], min(wait, 1.0))
    take("stdout", b"", final=True)
    take("stderr", b"", final=True)
    return "".join(chunks["stdout"]), "".join(chunks["stderr"])
