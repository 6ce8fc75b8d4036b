"""The `local` transport: commands run as subprocesses of this machine."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING

from grid_core.hookspecs import hookimpl
from grid_core.types import CommandResult, GridTransport, TransportError

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig, NodeConfig


class LocalTransport:
    """Runs argv directly (no shell), so arguments arrive literally."""

    def __init__(self, node: NodeConfig | None = None, cluster: ClusterConfig | None = None) -> None:
        self.default_timeout = node.command_timeout if node else None

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_output: Callable[[str, str], None] | None = None,
        stdin: bytes | str | None = None,
    ) -> CommandResult:
        limit = command_limit(timeout or self.default_timeout)
        full_env = {**os.environ, **env} if env else None
        try:
            # Its own process group, so that a timeout ends what the command started too (a
            # `sh -c 'sleep 4; :'` leaves the sleep holding our pipes otherwise).
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=full_env,
                text=True,
                errors="replace",
                process_group=0,
            )
        except OSError as exc:
            return CommandResult(127, "", f"{argv[0]}: {exc.strerror or exc}\n")
        chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}

        def pump(name: str, stream: IO[str]) -> None:
            for line in stream:
                chunks[name].append(line)
                if on_output:
                    on_output(name, line)

        assert proc.stdout is not None and proc.stderr is not None
        readers = [threading.Thread(target=pump, args=(n, s), daemon=True) for n, s in
                   (("stdout", proc.stdout), ("stderr", proc.stderr))]
        feeder = None
        if stdin is not None:
            assert proc.stdin is not None
            # From a thread too: a command that writes while it reads would fill its output pipe
            # while we still wrote, and never read again.
            feeder = threading.Thread(target=feed, args=(proc.stdin, stdin_bytes(stdin)), daemon=True)
            readers.append(feeder)
        for reader in readers:
            reader.start()
        try:
            status = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
            for reader in readers:  # a descendant that left the group may still hold the pipes
                reader.join(timeout=1.0)
            raise TransportError(f"command timed out after {limit:g} s") from None
        except BaseException:
            # Ctrl-C reaches only the terminal's foreground group, no longer the command's: pass it on.
            _signal_group(proc, signal.SIGINT)
            raise
        for reader in readers:
            # Once the command and its output are done, only a descendant that never reads could
            # still hold its stdin: that must not hang us.
            reader.join(timeout=1.0 if reader is feeder else None)
        return CommandResult(status, "".join(chunks["stdout"]), "".join(chunks["stderr"]))

    def put(self, local_path: str, remote_path: str) -> None:
        shutil.copyfile(local_path, remote_path)

    def get(self, remote_path: str, local_path: str) -> None:
        shutil.copyfile(remote_path, local_path)

    def close(self) -> None:
        pass


def stdin_bytes(data: bytes | str) -> bytes:
    """What a transport writes to a command's stdin: str as UTF-8 (os.environ's undecodable bytes too)."""
    return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)


def feed(stream: IO[str], data: bytes) -> None:
    """Write data to a text pipe's bytes, then close it (EOF); a command that stops reading is not an error."""
    with contextlib.suppress(OSError):  # BrokenPipeError, or the pipe closed under us at a timeout
        try:
            stream.buffer.write(data)  # type: ignore[attr-defined]  # a text pipe of Popen has its buffer
            stream.buffer.flush()  # type: ignore[attr-defined]
        finally:
            stream.close()


def command_limit(seconds: float | None) -> float | None:
    """A command's time limit: None (or inf) for none; nan, zero or negative are refused."""
    if seconds is None or seconds == math.inf:
        return None
    if not seconds > 0:  # also catches nan, which every comparison fails
        raise TransportError(f"a command timeout must be a positive number of seconds, not {seconds!r}")
    return seconds


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(proc.pid, sig)


@hookimpl
def grid_transports():  # type: ignore[no-untyped-def]
    yield GridTransport(name="local", summary="subprocesses on this machine", factory=LocalTransport)
