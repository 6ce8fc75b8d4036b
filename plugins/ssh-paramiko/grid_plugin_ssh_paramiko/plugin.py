"""Hook implementations of the ssh-paramiko plugin.

Importing this module stays cheap (no paramiko): `grid --help` and `grid plugins list` load it.
paramiko is imported by the factory, the first time a node actually uses the `ssh` transport.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from grid_core.hookspecs import hookimpl
from grid_core.types import GridTransport

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig, NodeConfig
    from grid_core.types import Transport


def ssh_transport(node: NodeConfig, cluster: ClusterConfig) -> Transport:
    """An SshTransport for the node; it connects on first use. In the CLI, unless
    ssh.persist_seconds is 0, a KeptTransport instead: the connection lives in the user's keeper
    process (keeper.py) and outlives the command. The cluster's own long-lived processes (the
    service, its controller) hold their connections themselves."""
    if cluster.ssh.persist_seconds > 0 and "grid_core.cli" in sys.modules:
        from grid_plugin_ssh_paramiko.keeper import KeptTransport

        return KeptTransport(node, cluster)
    from grid_plugin_ssh_paramiko.target import import_paramiko
    from grid_plugin_ssh_paramiko.transport import SshTransport

    import_paramiko()

    return SshTransport(node, cluster)


@hookimpl
def grid_transports() -> Iterator[GridTransport]:
    yield GridTransport(
        name="ssh",
        summary="commands and SFTP copies over SSH (paramiko), honouring ~/.ssh/config and known_hosts",
        factory=ssh_transport,
    )
