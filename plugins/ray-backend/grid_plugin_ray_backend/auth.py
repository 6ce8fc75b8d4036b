"""Ray's token authentication, and optionally TLS: grid makes the token (and certificates), keeps
them 0600, carries them to each node, and takes them back when the cluster stops.

Ray 2.60 reads the mode from RAY_AUTH_MODE and the token from RAY_AUTH_TOKEN, then
RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token. grid always sets the mode and a token path
explicitly (and drops RAY_AUTH_TOKEN), so that neither a stray ~/.ray/auth_token nor the user's
environment decides which cluster a command talks to (TESTBED.md section 3).

The token authenticates callers; it does not encrypt. Without `backend.tls`, Ray's traffic
(task arguments, objects, the token itself) crosses the network in the clear, so anyone who can
read it can also replay the token. With `backend.tls`, grid makes a CA for the cluster and one
certificate naming every node's address, and Ray's gRPC uses TLS (RAY_USE_TLS).
"""

from __future__ import annotations

import logging
import os
import posixpath
import shlex
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from grid_core.errors import GridError
from grid_core.state import state_dir, write_atomic
from grid_core.types import Transport, TransportError
from grid_plugin_ray_backend.layout import PRIVATE_DIRS, make_private, token_path

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig

log = logging.getLogger(__name__)
TLS_DIR = "tls"
TLS_FILES = ("ca.crt", "node.crt", "node.key")  # what a node gets; the CA's key stays here


def local_token(cluster_name: str) -> Path:
    """This cluster's token on this machine (mode 0600), made on first use. One that is empty or
    was readable by others is replaced, never used; one owned by another user is refused."""
    path = state_dir(cluster_name) / "auth_token"
    try:
        info = path.lstat()
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
            raise GridError(f"refusing the token {path}: it is not a file of this user's own; remove it")
        if info.st_size and not info.st_mode & 0o077:
            return path
        why = "empty" if not info.st_size else f"readable by others (mode {info.st_mode & 0o777:o})"
        log.warning("the token %s was %s: made a new one; restart the cluster if it runs", path, why)
    import secrets  # here: secrets (hmac, hashlib) and subprocess cost every status command

    write_atomic(path, secrets.token_hex(32))
    return path


def forget(cluster_name: str) -> None:
    """Drop this machine's token once the cluster is stopped: the next start issues a new one."""
    with_token = state_dir(cluster_name) / "auth_token"
    with_token.unlink(missing_ok=True)


def ray_env(directory: str, tls: bool) -> dict[str, str]:
    """The environment that makes Ray (a node, a driver, this process) use the token, and TLS,
    kept in `directory` (a node's grid directory, or this machine's state directory)."""
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path(directory)}
    if tls:
        ca, cert, key = (posixpath.join(directory, TLS_DIR, name) for name in TLS_FILES)
        env.update(RAY_USE_TLS="1", RAY_TLS_CA_CERT=ca, RAY_TLS_SERVER_CERT=cert, RAY_TLS_SERVER_KEY=key)
    return env


def use_in_this_process(config: ClusterConfig) -> None:
    """Point this process's Ray at the cluster's token (and TLS); call before Ray first connects."""
    local_token(config.name)
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(ray_env(str(state_dir(config.name)), config.backend.tls))


def carry(transport: Transport, config: ClusterConfig, directory: str, holder: str | None = None) -> None:
    """Copy the token (and the TLS files) into the node's grid directory, never readable by others:
    this machine's, or those in `holder`, a grid directory that holds them (the head's, where the
    grid service starts a worker again: rejoin.py). Without TLS this is one command, which makes (or
    checks) the directory and writes the token from its stdin: each command more was a round trip
    more for every node `cluster start` starts."""
    files = {token_path(directory): Path(token_path(holder)) if holder else local_token(config.name)}
    token, source = token_path(directory), files[token_path(directory)]
    if not config.backend.tls and posixpath.abspath(token) != str(source.resolve()):
        write = f'\nt={shlex.quote(token)} && : > "$t" && chmod 600 "$t" && cat > "$t"'
        result = transport.run(["sh", "-c", PRIVATE_DIRS + write, "sh", directory], stdin=source.read_bytes(),
                               timeout=60)
        if result.exit_status != 0:
            raise TransportError(result.stderr.strip() or f"cannot write {token}: exit {result.exit_status}")
        return
    make_private(transport, directory)
    if config.backend.tls:
        make_private(transport, posixpath.join(directory, TLS_DIR))
        here = Path(holder, TLS_DIR) if holder else state_dir(config.name) / TLS_DIR
        files.update({posixpath.join(directory, TLS_DIR, name): here / name for name in TLS_FILES})
    for remote, source in files.items():
        if posixpath.abspath(remote) == str(source.resolve()):
            continue  # a local node whose grid directory is the state directory
        result = transport.run(["sh", "-c", 'umask 077 && : > "$1" && chmod 600 "$1"', "sh", remote], timeout=60)
        if result.exit_status != 0:
            raise TransportError(f"cannot prepare {remote}: {result.stderr.strip() or result.exit_status}")
        transport.put(str(source), remote)


def take_back(transport: Transport, directory: str) -> None:
    """Remove the token and TLS files from a stopped node, so a node dropped from the config keeps no access."""
    paths = [token_path(directory), *(posixpath.join(directory, TLS_DIR, n) for n in TLS_FILES)]
    transport.run(["rm", "-f", *paths], timeout=60)


def make_tls(config: ClusterConfig, addresses: Sequence[str]) -> None:
    """The cluster's CA (made once) and a node certificate naming every address, made anew when
    the addresses change; with openssl, into the state directory (keys 0600)."""
    here = state_dir(config.name) / TLS_DIR
    here.mkdir(mode=0o700, exist_ok=True)
    names = sorted({*addresses, "127.0.0.1"})
    wanted = ",".join(["DNS:localhost", *(f"IP:{a}" for a in names)])
    if (here / "node.crt").exists() and (here / "sans").exists() and (here / "sans").read_text() == wanted:
        return

    def openssl(*args: str) -> None:
        import subprocess

        try:
            result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, cwd=here)
        except FileNotFoundError:
            raise GridError("backend.tls needs openssl on this machine to make the certificates") from None
        if result.returncode != 0:
            raise GridError(f"openssl {args[0]} failed: {result.stderr.strip()[-300:]}")

    old_umask = os.umask(0o077)
    try:
        key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
        if not (here / "ca.key").exists():
            openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
                    "-subj", f"/CN=grid {config.name} CA")
        openssl("req", *key, "-keyout", "node.key", "-out", "node.csr", "-subj", f"/CN=grid {config.name}")
        import tempfile

        with tempfile.NamedTemporaryFile("w", dir=here, suffix=".ext", delete=False) as ext:
            ext.write(f"subjectAltName={wanted}\n")
        try:
            openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", "node.crt", "-days", "825", "-extfile", ext.name)
        finally:
            os.unlink(ext.name)
    finally:
        os.umask(old_umask)
    write_atomic(here / "sans", wanted)
