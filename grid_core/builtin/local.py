"""The `local` transport: commands run as subprocesses of this machine."""

from __future__ import annotations

import os
import shutil
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
    ) -> CommandResult:
        full_env = {**os.environ, **env} if env else None
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=full_env,
                text=True,
                errors="replace",
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
        for reader in readers:
            reader.start()
        try:
            status = proc.wait(timeout=timeout or self.default_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TransportError(f"command timed out after {timeout or self.default_timeout} s") from None
        finally:
            for reader in readers:
                reader.join()
        return CommandResult(status, "".join(chunks["stdout"]), "".join(chunks["stderr"]))

    def put(self, local_path: str, remote_path: str) -> None:
        shutil.copyfile(local_path, remote_path)

    def get(self, remote_path: str, local_path: str) -> None:
        shutil.copyfile(remote_path, local_path)

    def close(self) -> None:
        pass


@hookimpl
def grid_transports():  # type: ignore[no-untyped-def]
    yield GridTransport(name="local", summary="subprocesses on this machine", factory=LocalTransport)
