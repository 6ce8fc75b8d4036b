"""Ray's token authentication: grid makes the token, keeps it 0600, and carries it to each node.

Ray 2.60 reads the mode from RAY_AUTH_MODE and the token from RAY_AUTH_TOKEN, then
RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token. grid always sets the mode and a token path
explicitly (and drops RAY_AUTH_TOKEN), so that neither a stray ~/.ray/auth_token nor the user's
environment decides which cluster a command talks to (TESTBED.md section 3).
"""

from __future__ import annotations

import os
import posixpath
import secrets
from pathlib import Path

from grid_core.state import state_dir
from grid_core.types import Transport, TransportError
from grid_plugin_ray_backend.layout import make_private, token_path


def local_token(cluster_name: str) -> Path:
    """This cluster's token on this machine, made on first use (mode 0600)."""
    path = state_dir(cluster_name) / "auth_token"
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another grid process made it first
            return path
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def ray_env(token_file: str) -> dict[str, str]:
    """The environment that makes Ray (a node or a driver) use token auth with this token."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_file}


def use_in_this_process(cluster_name: str) -> None:
    """Point this process's Ray at the cluster's token; call before Ray is first imported."""
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(ray_env(str(local_token(cluster_name))))


def carry(transport: Transport, cluster_name: str, directory: str) -> str:
    """Copy the token into the node's grid directory, never readable by others; its path there."""
    remote = token_path(directory)
    make_private(transport, directory)
    result = transport.run(["sh", "-c", 'umask 077 && : > "$1" && chmod 600 "$1"', "sh", remote], timeout=60)
    if result.exit_status != 0:
        raise TransportError(f"cannot prepare {remote}: {result.stderr.strip() or result.exit_status}")
    source = local_token(cluster_name)
    if posixpath.abspath(remote) != str(source.resolve()):
        transport.put(str(source), remote)
    return remote
