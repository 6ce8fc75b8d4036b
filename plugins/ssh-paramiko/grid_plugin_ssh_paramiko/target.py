"""Where and how to reach a node: grid's node config layered over `~/.ssh/config`, as OpenSSH would.

OpenSSH semantics kept: the config is looked up by the name the user wrote (an alias), `HostName`
says where to connect, and the host key is checked under `HostKeyAlias` or that host name. Grid's
own per-node `user`, `port` and `ssh_key_path` win over the file. Only the user's file is read
(not /etc/ssh/ssh_config): paramiko has no `Include`, and a system file would make a node's
behaviour depend on the machine grid runs on.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from grid_core.record import record
from grid_core.types import TransportError

if TYPE_CHECKING:
    from grid_core.config import NodeConfig, SshSettings

DEFAULT_PORT = 22
# [ssh://][user@]host[:port], the forms OpenSSH's ProxyJump accepts.
JUMP_HOP = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@]+)@)?(?P<host>\[[^\]]+\]|[^:]+)(?::(?P<port>\d+))?$")


@record
class SshTarget:
    """One SSH endpoint, fully resolved: what to dial, as whom, with which keys."""

    alias: str  # the name the user wrote, shown in messages
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...] = ()
    only_named_keys: bool = False  # True: no agent, no ~/.ssh/id_* (grid's ssh_key_path, IdentitiesOnly)
    host_key_alias: str | None = None
    jumps: tuple[SshTarget, ...] = ()  # ProxyJump hops, first hop first

    @property
    def host_key_name(self) -> str:
        """The name known_hosts files record this host under, as OpenSSH writes it."""
        name = self.host_key_alias or self.hostname
        return name if self.port == DEFAULT_PORT else f"[{name}]:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    def keys_label(self) -> str:
        """The credentials offered, for an authentication failure message."""
        named = ", ".join(self.key_files)
        if self.only_named_keys:
            return f"key {named}" if named else "no key"
        defaults = "ssh-agent and ~/.ssh/id_*"
        return f"key {named}, then {defaults}" if named else defaults


@record
class SshOptions:
    """How strictly and how long: host-key checking and timeouts for one node."""

    known_hosts: Path
    accept_new: bool
    connect_timeout: float
    command_timeout: float | None


def user_ssh_config_path() -> Path:
    return Path(os.path.expanduser("~/.ssh/config"))


def lookup_ssh_config(alias: str) -> Mapping[str, Any]:
    """The `~/.ssh/config` options for an alias (lower-case keys), or {} without a file."""
    path = user_ssh_config_path()
    if not path.is_file():
        return {}
    import paramiko

    try:
        return paramiko.SSHConfig.from_path(str(path)).lookup(alias)
    except Exception as exc:  # paramiko raises assorted errors for bad or unsupported lines
        raise TransportError(f"cannot use {path}: {type(exc).__name__}: {exc}") from None


def resolve_target(node: NodeConfig, settings: SshSettings) -> tuple[SshTarget, SshOptions]:
    """The node's endpoint and options: node config, then `~/.ssh/config`, then defaults."""
    found = lookup_ssh_config(node.host)
    named_key = node.ssh_key_path
    target = _target_from(
        node.host,
        found,
        user=node.user,
        port=node.port,
        key_files=(os.path.expanduser(named_key),) if named_key else None,
    )
    if named_key:
        target = attrs.evolve(target, only_named_keys=True)
    target = attrs.evolve(target, jumps=_jumps(found.get("proxyjump"), fallback_keys=target.key_files))
    options = SshOptions(
        known_hosts=_known_hosts_path(node, settings, found),
        accept_new=(node.host_key_policy or settings.host_key_policy) == "accept-new",
        connect_timeout=node.connect_timeout or settings.connect_timeout,
        command_timeout=node.command_timeout or settings.command_timeout,
    )
    return target, options


def _target_from(
    alias: str,
    found: Mapping[str, Any],
    *,
    user: str | None = None,
    port: int | None = None,
    key_files: tuple[str, ...] | None = None,
) -> SshTarget:
    try:
        config_port = int(found.get("port", DEFAULT_PORT))
    except ValueError:
        where = user_ssh_config_path()
        raise TransportError(f"{where}: Port {found.get('port')!r} for {alias} is not a number") from None
    return SshTarget(
        alias=alias,
        hostname=found.get("hostname", alias),
        port=port or config_port,
        user=user or found.get("user") or getpass.getuser(),
        # OpenSSH skips IdentityFile lines whose file is missing; a key grid's config names must exist.
        key_files=key_files if key_files is not None else
        tuple(p for p in found.get("identityfile", ()) if os.path.exists(p)),
        only_named_keys=str(found.get("identitiesonly", "no")).lower() == "yes",
        host_key_alias=found.get("hostkeyalias"),
    )


def _jumps(proxy_jump: str | None, fallback_keys: tuple[str, ...]) -> tuple[SshTarget, ...]:
    """ProxyJump hops, each looked up in `~/.ssh/config` itself (its own ProxyJump is not followed)."""
    if not proxy_jump or proxy_jump.strip().lower() == "none":
        return ()
    hops = []
    for spec in proxy_jump.split(","):
        match = JUMP_HOP.match(spec.strip())
        if match is None:
            raise TransportError(f"{user_ssh_config_path()}: cannot read ProxyJump hop {spec!r}")
        host = match["host"].strip("[]")
        hop = _target_from(host, lookup_ssh_config(host), user=match["user"],
                           port=int(match["port"]) if match["port"] else None)
        if not hop.key_files:  # as a user would expect: the node's key opens the jump host too
            hop = attrs.evolve(hop, key_files=fallback_keys)
        hops.append(hop)
    return tuple(hops)


def _known_hosts_path(node: NodeConfig, settings: SshSettings, found: Mapping[str, Any]) -> Path:
    """Node's known_hosts, then [ssh].known_hosts, then ~/.ssh/config's UserKnownHostsFile, then ~/.ssh/known_hosts."""
    from_config = str(found.get("userknownhostsfile", "")).split()
    chosen = node.known_hosts or settings.known_hosts or (from_config[0] if from_config else "~/.ssh/known_hosts")
    return Path(os.path.expanduser(chosen))


def import_paramiko() -> None:
    """Import paramiko, without `invoke` unless ~/.ssh/config needs it.

    paramiko imports invoke (about 50 ms, a quarter of its import) only to run `Match exec` lines;
    `grid exec` pays that on every run. When the user's ssh config has no such line, invoke is
    hidden for the duration of the import (paramiko then records it as missing) and unhidden after.
    """
    if "paramiko" in sys.modules or "invoke" in sys.modules:
        return
    path = user_ssh_config_path()
    try:
        needs_invoke = path.is_file() and "exec" in path.read_text(errors="replace").lower()
    except OSError:
        needs_invoke = False
    if not needs_invoke:
        sys.modules["invoke"] = None  # type: ignore[assignment]  # makes `import invoke` fail fast
    try:
        import paramiko  # noqa: F401
    finally:
        if not needs_invoke:
            del sys.modules["invoke"]
