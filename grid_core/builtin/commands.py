"""grid-core's own commands, registered through the same hook as any plugin's."""

from __future__ import annotations

from grid_core.hookspecs import hookimpl
from grid_core.types import GridCommand


@hookimpl
def grid_commands():  # type: ignore[no-untyped-def]
    yield GridCommand(name="plugins", summary="List, install and remove plugins, here and on every node.",
                      import_path="grid_core.cli.plugins:plugins")
    yield GridCommand(name="config", summary="Create, check and show the cluster config.",
                      import_path="grid_core.cli.config:config")
    yield GridCommand(name="exec", summary="Run a command on nodes in parallel.",
                      import_path="grid_core.cli.exec:exec_command")
    yield GridCommand(name="doctor", summary="Check every node: reachable, host key, auth, Python, the engine, GPUs.",
                      import_path="grid_core.cli.doctor:doctor")
    yield GridCommand(name="cluster", summary="Start, stop and inspect the cluster.",
                      import_path="grid_core.cli.cluster:cluster")
    yield GridCommand(name="run", summary="Run a command as a job on the cluster.",
                      import_path="grid_core.cli.run:run")
    yield GridCommand(name="offload", summary="Keep the head responsive: auto offload, holds, moves, watch.",
                      import_path="grid_core.cli.offload:offload")
    yield GridCommand(name="boost", summary="Borrow capacity from other nodes.",
                      import_path="grid_core.cli.boost:boost")
    yield GridCommand(name="completion", summary="Print the shell completion script (bash, zsh, fish).",
                      import_path="grid_core.cli.completion:completion")
    yield GridCommand(name="jobs", summary="List, follow and stop jobs.",
                      import_path="grid_core.cli.run:jobs")
