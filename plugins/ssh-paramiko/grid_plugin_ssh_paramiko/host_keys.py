"""Host-key checking as OpenSSH's StrictHostKeyChecking `yes` (grid's "strict") and `accept-new`.

paramiko asks a MissingHostKeyPolicy only about hosts it has no key for; a host whose key differs
from the recorded one raises BadHostKeyException before any policy runs, so `accept-new` can never
accept a changed key. Accepted keys are appended to the file (never rewritten: paramiko's own
save_host_keys would drop comments, markers and hashed entries that it does not understand).
"""

from __future__ import annotations

import logging
import os
import shlex
import threading
from pathlib import Path

import paramiko
import paramiko.hostkeys

from grid_core.record import record
from grid_core.types import HostKeyError

from .target import SshTarget

log = logging.getLogger(__name__)
_append_lock = threading.Lock()  # threads of one fan-out may record keys into one shared file


def describe(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def unknown_message(target: SshTarget, key: paramiko.PKey, known: Known) -> str:
    scan = shlex.join(["ssh-keyscan", "-p", str(target.port), "-t", key.get_name(), target.hostname])
    note = (f" ({known.path} has {known.cert_authorities} @cert-authority line(s): grid checks host keys, not "
            "host certificates)") if known.cert_authorities else ""
    return (
        f"host key for {target.alias} ({target.host_key_name}) is unknown: the server offered {describe(key)}; "
        f"check that fingerprint, then add it to {known.path} ({scan} >> {shlex.quote(str(known.path))}) "
        f'or set host_key_policy = "accept-new"{note}'
    )


def changed_message(target: SshTarget, offered: paramiko.PKey, recorded: paramiko.PKey, known_hosts: Path) -> str:
    remove = shlex.join(["ssh-keygen", "-R", target.host_key_name, "-f", str(known_hosts)])
    return (
        f"host key for {target.alias} ({target.host_key_name}) has CHANGED: the server offered {describe(offered)} "
        f"but {known_hosts} records {describe(recorded)}; this is a possible man-in-the-middle attack. If the "
        f"host was reinstalled and you trust the new key, remove the old key with {remove} and connect again"
    )


@record
class Known:
    """What a known_hosts file says beyond the keys loaded into the client."""

    path: Path
    revoked: frozenset[tuple[str, str]] = frozenset()  # (type, base64) of each @revoked key
    cert_authorities: int = 0  # @cert-authority lines, which grid does not use


def load(client: paramiko.SSHClient, known_hosts: Path) -> Known:
    """Load the file into the client's keys; a missing file is an empty one.

    paramiko's own loader stops at the first line it cannot parse (an `@cert-authority` or
    `@revoked` marker raises InvalidHostKey), so the file is read here line by line: a marker
    line or a malformed one is skipped with a note in the log, and a revoked key is never
    loaded, whatever other line lists it; CheckedPolicy refuses it even with accept-new.
    """
    if not known_hosts.is_file():
        return Known(known_hosts)
    try:
        lines = known_hosts.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise HostKeyError(f"cannot read {known_hosts}: {exc.strerror or exc}") from None
    revoked: set[tuple[str, str]] = set()
    entries, authorities = [], 0
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        marker, _, rest = line.partition(" ") if line.startswith("@") else ("", "", line)
        fields = rest.split()
        if marker == "@revoked" and len(fields) >= 3:
            revoked.add((fields[1], fields[2]))
            continue
        if marker:
            authorities += marker == "@cert-authority"
            log.info("%s:%d: skipped: grid does not use %s lines", known_hosts, number, marker)
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
        except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError) as exc:
            log.info("%s:%d: skipped a malformed line (%s)", known_hosts, number, exc)
            continue
        if entry is not None:
            entries.append(entry)
    keys = client.get_host_keys()
    for entry in entries:
        if (entry.key.get_name(), entry.key.get_base64()) in revoked:
            continue
        for name in entry.hostnames:
            if name not in keys or entry.key.get_name() not in keys[name]:  # the first line wins, as in paramiko
                keys.add(name, entry.key.get_name(), entry.key)
    return Known(known_hosts, frozenset(revoked), authorities)


def remember(known_hosts: Path, name: str, key: paramiko.PKey) -> None:
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

    def __init__(self, target: SshTarget, known: Known, accept_new: bool) -> None:
        self.target = target
        self.known = known
        self.known_hosts = known.path
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if (key.get_name(), key.get_base64()) in self.known.revoked:
            raise HostKeyError(f"host key for {self.target.alias} ({self.target.host_key_name}) is REVOKED in "
                               f"{self.known_hosts}: the server offered {describe(key)}; refusing to connect")
        if not self.accept_new:
            raise HostKeyError(unknown_message(self.target, key, self.known))
        try:
            remember(self.known_hosts, hostname, key)
        except OSError as exc:
            raise HostKeyError(f"cannot record the new host key of {self.target.alias} in {self.known_hosts}: "
                               f"{exc.strerror or exc}") from None
        client.get_host_keys().add(hostname, key.get_name(), key)
