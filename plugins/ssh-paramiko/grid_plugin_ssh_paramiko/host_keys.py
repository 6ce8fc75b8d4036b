"""Host-key checking as OpenSSH's StrictHostKeyChecking `yes` (grid's "strict") and `accept-new`.

paramiko asks a MissingHostKeyPolicy only about hosts it has no key for; a host whose key differs
from the recorded one raises BadHostKeyException before any policy runs, so `accept-new` can never
accept a changed key. Accepted keys are appended to the file (never rewritten: paramiko's own
save_host_keys would drop comments, markers and hashed entries that it does not understand).
"""

from __future__ import annotations

import os
import shlex
import threading
from pathlib import Path

import paramiko

from grid_core.types import HostKeyError

from .target import SshTarget

_append_lock = threading.Lock()  # threads of one fan-out may record keys into one shared file


def describe(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def unknown_message(target: SshTarget, key: paramiko.PKey, known_hosts: Path) -> str:
    scan = shlex.join(["ssh-keyscan", "-p", str(target.port), "-t", key.get_name(), target.hostname])
    return (
        f"host key for {target.alias} ({target.host_key_name}) is unknown: the server offered {describe(key)}; "
        f"check that fingerprint, then add it to {known_hosts} ({scan} >> {shlex.quote(str(known_hosts))}) "
        'or set host_key_policy = "accept-new"'
    )


def changed_message(target: SshTarget, offered: paramiko.PKey, recorded: paramiko.PKey, known_hosts: Path) -> str:
    remove = shlex.join(["ssh-keygen", "-R", target.host_key_name, "-f", str(known_hosts)])
    return (
        f"host key for {target.alias} ({target.host_key_name}) has CHANGED: the server offered {describe(offered)} "
        f"but {known_hosts} records {describe(recorded)}; this is a possible man-in-the-middle attack. If the "
        f"host was reinstalled and you trust the new key, remove the old key with {remove} and connect again"
    )


def load(client: paramiko.SSHClient, known_hosts: Path) -> None:
    """Load the file into the client's keys; a missing file is an empty one."""
    if known_hosts.is_file():
        try:
            client.load_host_keys(str(known_hosts))
        except OSError as exc:
            raise HostKeyError(f"cannot read {known_hosts}: {exc.strerror or exc}") from None


def record(known_hosts: Path, name: str, key: paramiko.PKey) -> None:
    """Append one `name type base64` line, creating the file (and ~/.ssh) private if missing."""
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _append_lock:
        needs_newline = known_hosts.is_file() and known_hosts.stat().st_size > 0 and \
            not known_hosts.read_bytes().endswith(b"\n")
        fd = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(("\n" if needs_newline else "") + f"{name} {key.get_name()} {key.get_base64()}\n")


class CheckedPolicy(paramiko.MissingHostKeyPolicy):
    """Refuses unknown host keys, or with accept_new records them and goes on."""

    def __init__(self, target: SshTarget, known_hosts: Path, accept_new: bool) -> None:
        self.target = target
        self.known_hosts = known_hosts
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept_new:
            raise HostKeyError(unknown_message(self.target, key, self.known_hosts))
        try:
            record(self.known_hosts, hostname, key)
        except OSError as exc:
            raise HostKeyError(f"cannot record the new host key of {self.target.alias} in {self.known_hosts}: "
                               f"{exc.strerror or exc}") from None
        client.get_host_keys().add(hostname, key.get_name(), key)
