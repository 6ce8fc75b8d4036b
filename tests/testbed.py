"""Real SSH test hosts on this machine: one network, PID, UTS and mount namespace per host.

Each host gets its own address on a private bridge (10.213.X.0/24, no default route, no
forwarding: nothing leaves the machine), its own hostname, process table and tmpfs /tmp, and a
real OpenSSH server with its own host key. See /work/shared/TESTBED.md sections 1, 3 and 4.

Usage (as root)::

    from tests.testbed import Testbed, require_testbed

    def test_something(tmp_path):
        require_testbed()  # skips with a reason, or fails under CI=true
        with Testbed(n_hosts=3, workdir=tmp_path) as tb:
            subprocess.run(["ssh", "-F", str(tb.ssh_config), "host1", "hostname"], check=True)
            config = tb.write_grid_config(tmp_path / "grid.toml")
            tb.host_exec("host2", ["ps", "-e"])   # runs inside host2's namespaces
            tb.link_down("host3")                 # host3 becomes unreachable

Files in `workdir`: `id_ed25519` (client key), `known_hosts`, `ssh_config` (aliases host1..hostN),
`bashrc` (the minimal rc the hosts use), and per host `hostN/` with its sshd config, host key,
authorized_keys, sshd.log, launcher.log and scripts. The workdir stays visible at its own path
inside every host, also when it lives under /tmp.

Never run `ray stop` outside a host: use `host_exec` or ssh, where it only sees that host.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

__all__ = ["Host", "Testbed", "TestbedError", "remove_stale", "require_testbed", "testbed_unavailable_reason"]

SSHD = "/usr/sbin/sshd"
SUBNET_BASE = "10.213"
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INSTALL_HINT = "apt-get install -y --no-install-recommends openssh-server iproute2"
_LOCK_PATH = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
_seq = 0  # testbeds made by this process, so two in one process get different names


class TestbedError(RuntimeError):
    """Setting up or driving a test host failed; the message carries the relevant logs."""

    __test__ = False  # not a pytest test class


def testbed_unavailable_reason() -> str | None:
    """Why test hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "test hosts need root (network, PID and mount namespaces)"
    missing = [tool for tool in ("ip", "unshare", "nsenter", "ssh-keygen") if shutil.which(tool) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    if missing:
        return f"test hosts need {', '.join(missing)} (install: {INSTALL_HINT})"
    if not Path("/proc/self/ns/net").exists():
        return "test hosts need network namespaces (/proc/self/ns/net is missing)"
    return None


def require_testbed() -> None:
    """Skip the calling test when test hosts cannot be made; under CI=true fail instead."""
    reason = testbed_unavailable_reason()
    if reason is None:
        return
    import pytest  # only tests call this; benchmarks can import the module without pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true requires the real-host tests to run, but: {reason}")
    pytest.skip(reason)


@dataclass
class Host:
    """One test host. `launcher_pid` is the root-namespace `unshare`; `init_pid` its child, PID 1 inside."""

    name: str
    ip: str
    namespace: str
    veth: str  # root-side end of the host's veth pair, a port of the bridge
    dir: Path
    host_key_path: Path
    sshd_config: Path
    sshd_log: Path
    sshd_pid_file: Path  # PID as seen inside the host
    authorized_keys: Path
    launcher_pid: int = 0
    init_pid: int = 0


@dataclass
class _State:
    """What teardown needs, kept apart from Testbed so the finalizer does not keep it alive."""

    bridge: str = ""
    veths: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    launchers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    init_pids: list[int] = field(default_factory=list)


class Testbed:
    """N test hosts, each a real sshd in its own namespaces, and the client files to reach them.

    Set up in the constructor; torn down by `close()` (idempotent), by leaving the `with` block,
    or at interpreter exit. Hosts also die if the thread that made them exits (PR_SET_PDEATHSIG),
    so create a Testbed in a long-lived thread (pytest's main thread is fine).
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        n_hosts: int = 3,
        workdir: Path | str | None = None,
        prefix: str = "gt",
        *,
        path_extra: Sequence[str] | None = None,
        keep_visible: Iterable[Path | str] = (),
        ready_timeout: float | None = None,
        cpus: Mapping[str, str] | None = None,
        users: Sequence[str] = (),
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """`path_extra`: directories put before the standard PATH in ssh sessions (default: this
        interpreter's bin directory, so the project's python and `ray` are found as on a node
        where they are installed; pass () for a bare node). `keep_visible`: paths under /tmp,
        besides the workdir and this interpreter's prefix, that hosts must still see. `cpus`: host
        name -> a taskset CPU list ("0", "2-3") the host runs on, everything in it included, so
        that hosts do not share CPUs (TESTBED.md section 3a). `users`: login names besides root that
        the hosts accept (with the same client key), as a lab's own accounts: each host gets its own
        passwd, shadow and group with them, and a home under its private /tmp; nothing changes on
        this machine. Their sessions reach this interpreter through a 0755 cover on /root that
        keeps only `keep_visible`'s paths under it (root's home is 0700, and pyenv lives there).
        `groups`: group name -> which of `users` are in it, in the hosts' own group file."""
        global _seq
        if n_hosts < 1:
            raise ValueError("n_hosts must be at least 1")
        reason = testbed_unavailable_reason()
        if reason is not None:
            raise TestbedError(reason)
        _seq += 1
        # The creator's PID in fixed width lets remove_stale() tell a dead run's leftovers apart.
        self.tag = f"{prefix}{_base36(os.getpid()).rjust(5, '0')}{_base36(_seq)}"
        if len(f"{self.tag}v{n_hosts}") > 15:  # Linux interface names are at most 15 characters
            raise ValueError(f"prefix {prefix!r} is too long for {n_hosts} hosts")
        self.workdir = Path(workdir if workdir is not None else tempfile.mkdtemp(prefix="testbed-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.client_key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.ssh_config = self.workdir / "ssh_config"
        self.rc_file = self.workdir / "bashrc"
        self.hosts: list[Host] = []
        self.bridge_ip = ""
        self._path = ":".join(
            [*(path_extra if path_extra is not None else [str(Path(sys.executable).parent)]), STD_PATH]
        )
        # The project too: an editable install's code lives in its checkout, which may be under /tmp.
        project = Path(__file__).resolve().parent.parent
        self._keep_visible = [Path(p) for p in (self.workdir, sys.prefix, sys.base_prefix, project, *keep_visible)]
        self._cpus = dict(cpus or {})
        self.users = tuple(users)
        self.groups = dict(groups or {})
        self._ready_timeout = ready_timeout if ready_timeout is not None else 10.0 + 0.5 * n_hosts
        self._state = _State()
        self._finalizer = weakref.finalize(self, _teardown, self._state)
        try:
            self._setup(n_hosts)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill every host and delete its namespace and links; safe to call again."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __repr__(self) -> str:
        return f"Testbed({self.tag}, {len(self.hosts)} hosts on {self.bridge_ip}/24, {self.workdir})"

    def _setup(self, n: int) -> None:
        for i in range(1, n + 1):
            name = f"host{i}"
            d = self.workdir / name
            d.mkdir(exist_ok=True)
            self.hosts.append(
                Host(
                    name=name,
                    ip="",
                    namespace=f"{self.tag}h{i}",
                    veth=f"{self.tag}v{i}",
                    dir=d,
                    host_key_path=d / "ssh_host_ed25519_key",
                    sshd_config=d / "sshd_config",
                    sshd_log=d / "sshd.log",
                    sshd_pid_file=d / "sshd.pid",
                    authorized_keys=d / "authorized_keys",
                )
            )
        # ssh-keygen is the slowest step: all keys are made at once.
        _keygen([(self.client_key, "testbed-client")] + [(h.host_key_path, h.name) for h in self.hosts])
        self._make_network()
        client_pub = self.client_key.with_suffix(".pub").read_text()
        self.rc_file.write_text(
            "# Test host rc (tests/testbed.py): root's real ~/.bashrc runs pyenv init, ~90 ms per ssh\n"
            "# command. PATH comes from sshd's SetEnv.\n"
        )
        for h in self.hosts:
            h.authorized_keys.write_text(client_pub)
            h.sshd_config.write_text(self._sshd_config(h))
            (h.dir / "start_sshd.sh").write_text(
                "#!/bin/sh\n# (Re)starts this host's sshd in the background; -e sends its log to sshd.log.\n"
                f"setsid {SSHD} -D -e -f {_q(h.sshd_config)} </dev/null >>{_q(h.sshd_log)} 2>&1 &\n"
            )
            (h.dir / "launcher.sh").write_text(self._launcher_script(h))
        self._write_client_files()
        for h in self.hosts:
            self._start_host(h)
        self._wait_ready(self.hosts, up=True)
        for h in self.hosts:
            h.init_pid = _child_pid(h.launcher_pid)
            self._state.init_pids.append(h.init_pid)

    def _make_network(self) -> None:
        st = self._state
        # The lock makes choosing a free 10.213.X.0/24 and claiming it on the bridge one step,
        # so concurrent runs never pick the same subnet.
        with open(_LOCK_PATH / "grid-testbed.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            x = _free_subnet()
            self.bridge_ip = f"{SUBNET_BASE}.{x}.1"
            st.bridge = f"{self.tag}br"
            _ip_batch(
                [
                    f"link add {st.bridge} type bridge",
                    f"addr add {self.bridge_ip}/24 dev {st.bridge}",
                    f"link set {st.bridge} up",
                ]
            )
        cmds = []
        for i, h in enumerate(self.hosts, start=1):
            h.ip = f"{SUBNET_BASE}.{x}.{10 + i}"
            st.namespaces.append(h.namespace)
            st.veths.append(h.veth)
            cmds += [
                f"netns add {h.namespace}",
                f"link add {h.veth} type veth peer name eth0 netns {h.namespace}",
                f"link set {h.veth} master {st.bridge}",
                f"link set {h.veth} up",
            ]
        _ip_batch(cmds)
        for h in self.hosts:
            _ip_batch([f"addr add {h.ip}/24 dev eth0", "link set eth0 up", "link set lo up"], netns=h.namespace)

    def _sshd_config(self, h: Host) -> str:
        return f"""\
# Test host {h.name} (tests/testbed.py)
ListenAddress {h.ip}:22
HostKey {_qc(h.host_key_path)}
PidFile {_qc(h.sshd_pid_file)}
AuthorizedKeysFile {_qc(h.authorized_keys)}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
# No PAM: no /etc/pam.d setup, and PAM would reset PATH.
UsePAM no
# Files under /tmp would fail the ownership check.
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
# Generous limits for fan-out benchmarks (defaults: 10 sessions, 10:30:100 startups).
MaxSessions 64
MaxStartups 100
LoginGraceTime 30
SetEnv {_qc("PATH=" + self._path)}
Subsystem sftp internal-sftp
"""

    def _launcher_script(self, h: Host) -> str:
        lines = [
            "#!/bin/sh",
            f"# PID 1 of test host {h.name}: own net, PID, UTS and mount namespaces (tests/testbed.py).",
            "set -eu",
            f"echo {h.name} > /proc/sys/kernel/hostname",
        ]
        if h.name in self._cpus:  # sshd, and all it starts (Ray included), inherit the affinity
            lines.append(f"taskset -cp {_q(self._cpus[h.name])} $$ >/dev/null")
        root_home = Path(pwd.getpwuid(0).pw_dir)
        bashrc = root_home / ".bashrc"
        if self.users:
            lines += self._user_lines(h, root_home)
        elif bashrc.exists():
            lines.append(f"mount --bind {_q(self.rc_file)} {_q(bashrc)}")
        # A private /tmp and /var/tmp (what grid leaves there, GPU claims among it, stays the host's):
        # each built aside, the kept paths bound into it, then moved over (unshare made every mount
        # private, which --move needs). sshd reads its keys from the workdir on every connection.
        for shared in (Path("/tmp"), Path("/var/tmp")):
            stage = h.dir / f"{'-'.join(shared.parts[1:])}-stage"
            stage.mkdir(exist_ok=True)
            lines.append(f"mount -t tmpfs -o mode=1777 tmpfs {_q(stage)}")
            keep: list[Path] = []  # parents before children
            for p in sorted({p.resolve() for p in self._keep_visible}, key=lambda p: len(p.parts)):
                if p.is_relative_to(shared) and p != shared and not any(p.is_relative_to(k) for k in keep):
                    keep.append(p)
                    lines += [f"mkdir -p {_q(stage / p.relative_to(shared))}",
                              f"mount --bind {_q(p)} {_q(stage / p.relative_to(shared))}"]
            lines.append(f"mount --move {_q(stage)} {_q(shared)}")
        lines += [
            "mkdir -p /run/sshd",  # sshd's privilege-separation directory
            *(f"install -d -m 700 -o {uid} -g {uid} /tmp/home/{name}" for name, uid in self._uids()),
            f"/bin/sh {_q(h.dir / 'start_sshd.sh')}",
            # As PID 1 this shell inherits orphans (Ray daemonizes); waiting on a foreground
            # child makes it reap every child, so none lingers as a zombie.
            "while :; do sleep 3600 || :; done",  # a power_off's SIGKILL to the sleep must not end it
        ]
        return "\n".join(lines) + "\n"

    def _ids(self) -> dict[str, int]:
        """Each of `users` (a uid and its own group's gid) and `groups` with an id that this machine's
        own accounts and groups do not use."""
        taken = {int(line.split(":")[2]) for name in ("passwd", "group")
                 for line in Path("/etc", name).read_text().splitlines() if line.count(":") >= 2
                 and line.split(":")[2].isdigit()}
        free = (uid for uid in range(20001, 60000) if uid not in taken)
        return {name: next(free) for name in (*self.users, *self.groups)}

    def _uids(self) -> list[tuple[str, int]]:
        ids = self._ids()
        return [(name, ids[name]) for name in self.users]

    def _user_lines(self, h: Host, root_home: Path) -> list[str]:
        """Launcher lines: this host's own account files with `users`, and the /root cover."""
        lines = []
        extra = {"passwd": "".join(f"{n}:x:{u}:{u}::/tmp/home/{n}:/bin/sh\n" for n, u in self._uids()),
                 "shadow": "".join(f"{n}:*:19000:0:99999:7:::\n" for n, _ in self._uids()),  # '*': not locked
                 "group": "".join(f"{n}:x:{u}:\n" for n, u in self._uids())
                 + "".join(f"{g}:x:{self._ids()[g]}:{','.join(members)}\n" for g, members in self.groups.items())}
        for name, added in extra.items():
            # The machine's own line for one of these names would win (the first entry does).
            kept = [line for line in Path("/etc", name).read_text().splitlines(keepends=True)
                    if line.split(":", 1)[0] not in (*self.users, *self.groups)]
            own = h.dir / name
            own.write_text("".join(kept) + added)
            own.chmod(0o640 if name == "shadow" else 0o644)
            lines.append(f"mount --bind {_q(own)} /etc/{name}")
        # sshd reads authorized_keys as the user logging in: the way there must be open.
        for d in (self.workdir, h.dir):
            d.chmod(0o755)
        stage = h.dir / "root-stage"
        stage.mkdir(exist_ok=True)
        lines += ["umask 022", f"mount -t tmpfs -o mode=755 tmpfs {_q(stage)}",
                  f"touch {_q(stage / '.bashrc')}", f"mount --bind {_q(self.rc_file)} {_q(stage / '.bashrc')}"]
        for p in sorted({p.resolve() for p in self._keep_visible if p.resolve().is_relative_to(root_home)}):
            inner = stage / p.relative_to(root_home)
            lines += [f"mkdir -p {_q(inner)}", f"mount --bind {_q(p)} {_q(inner)}"]
        return [*lines, f"mount --move {_q(stage)} {_q(root_home)}"]

    def _write_client_files(self) -> None:
        self.known_hosts.write_text(self._known_hosts_text())
        blocks = []
        for h in self.hosts:
            blocks.append(
                f"Host {h.name} {h.ip}\n"
                f"    HostName {h.ip}\n"
                "    User root\n"
                "    Port 22\n"
                f"    IdentityFile {_qc(self.client_key)}\n"
                "    IdentitiesOnly yes\n"
                f"    UserKnownHostsFile {_qc(self.known_hosts)}\n"
                "    GlobalKnownHostsFile /dev/null\n"
                "    StrictHostKeyChecking yes\n"
                "    BatchMode yes\n"
                "    ConnectTimeout 5\n"
                "    LogLevel ERROR\n"
            )
        self.ssh_config.write_text("# Test hosts (tests/testbed.py)\n" + "\n".join(blocks))

    def _known_hosts_text(self) -> str:
        lines = []
        for h in self.hosts:
            key_type, key = h.host_key_path.with_suffix(".pub").read_text().split()[:2]
            lines.append(f"{h.name},{h.ip} {key_type} {key}\n")
        return "".join(lines)

    def _start_host(self, h: Host) -> None:
        argv = [
            "ip", "netns", "exec", h.namespace,
            "unshare", "--pid", "--fork", "--mount-proc", "--uts", "--mount", "--kill-child=SIGKILL",
            "/bin/sh", str(h.dir / "launcher.sh"),
        ]  # fmt: skip
        if shutil.which("setpriv"):
            # The hosts die with the thread that made them, even when it is SIGKILLed.
            argv = ["setpriv", "--pdeathsig", "KILL", *argv]
        with open(h.dir / "launcher.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": STD_PATH, "HOME": pwd.getpwuid(0).pw_dir, "LANG": "C.UTF-8"},
                start_new_session=True,  # a Ctrl-C in the terminal must not kill hosts mid-test
            )
        self._state.launchers.append(proc)
        h.launcher_pid = proc.pid

    def _wait_ready(self, hosts: Sequence[Host], *, up: bool) -> None:
        """Poll each sshd port until it accepts (up) or refuses (not up); bounded in time and count."""
        pending = list(hosts)
        deadline = time.monotonic() + self._ready_timeout
        for _ in range(int(self._ready_timeout / 0.02) + 1):
            pending = [h for h in pending if _port_open(h.ip) != up]
            if not pending:
                return
            for h in pending:
                proc = next((p for p in self._state.launchers if p.pid == h.launcher_pid), None)
                if proc is not None and proc.poll() is not None:
                    raise TestbedError(f"{h.name}: launcher exited with {proc.returncode}\n{self._logs(h)}")
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        state = "accept" if up else "close"
        names = ", ".join(h.name for h in pending)
        raise TestbedError(
            f"sshd did not {state} within {self._ready_timeout:.0f} s on {names}\n{self._logs(pending[0])}"
        )

    @staticmethod
    def _logs(h: Host) -> str:
        out = []
        for p in (h.dir / "launcher.log", h.sshd_log):
            text = p.read_text(errors="replace")[-4000:] if p.exists() else "(none)"
            out.append(f"--- {p}:\n{text}")
        return "\n".join(out)

    # ------------------------------------------------------------------ driving hosts

    def host(self, host: Host | str) -> Host:
        """The host object for a name (or the host itself)."""
        if isinstance(host, Host):
            return host
        for h in self.hosts:
            if h.name == host:
                return h
        raise KeyError(f"no test host {host!r} (hosts: {', '.join(h.name for h in self.hosts)})")

    def host_exec(
        self,
        host: Host | str,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = False,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the host's namespaces (net, PID, UTS, mount), as a fresh login there
        would: PATH as in its ssh sessions, not this process's environment."""
        h = self.host(host)
        if self.closed:
            raise TestbedError("testbed is closed")
        cmd = ["nsenter", f"--target={h.init_pid}", "--net", "--pid", "--uts", "--mount", "--", *argv]
        base_env = {"PATH": self._path, "HOME": pwd.getpwuid(0).pw_dir, "LANG": "C.UTF-8"}
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=check, input=input,
            env=dict(env) if env is not None else base_env,
        )  # fmt: skip

    def kill_sshd(self, host: Host | str) -> None:
        """SIGKILL the host's listening sshd (open sessions live on) and wait until its port refuses."""
        h = self.host(host)
        # The pid file outlives a killed sshd: check the PID is still sshd before killing it.
        script = f'pid=$(cat {_q(h.sshd_pid_file)}) && [ "$(cat /proc/$pid/comm)" = sshd ] && kill -KILL "$pid"'
        self.host_exec(h, ["sh", "-c", script])
        self._wait_ready([h], up=False)

    def start_sshd(self, host: Host | str) -> None:
        """Start the host's sshd again (after kill_sshd) and wait until it accepts."""
        h = self.host(host)
        self.host_exec(h, ["/bin/sh", str(h.dir / "start_sshd.sh")], check=True)
        self._wait_ready([h], up=True)

    def power_off(self, host: Host | str) -> None:
        """Every process of the host but its init dies at once (SIGKILL), sshd too, as at a power
        cut; power_on brings it back."""
        self.host_exec(host, ["sh", "-c", "kill -9 -1"])
        self._wait_ready([self.host(host)], up=False)

    def power_on(self, host: Host | str) -> None:
        """The host after power_off, booted: its sshd answers again (nothing else starts)."""
        self.start_sshd(host)

    def link_down(self, host: Host | str) -> None:
        """Take the host off the network: connections to it time out, as to an unplugged machine."""
        _ip_batch([f"link set {self.host(host).veth} down"])

    def link_up(self, host: Host | str) -> None:
        _ip_batch([f"link set {self.host(host).veth} up"])

    def regenerate_host_key(self, host: Host | str, *, update_known_hosts: bool = False) -> None:
        """Give the host a new host key and restart its sshd. known_hosts keeps the old key
        unless asked, so clients see a changed key."""
        h = self.host(host)
        self.kill_sshd(h)
        for p in (h.host_key_path, h.host_key_path.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        _keygen([(h.host_key_path, h.name)])
        self.start_sshd(h)
        if update_known_hosts:
            self.known_hosts.write_text(self._known_hosts_text())

    def write_grid_config(
        self,
        path: Path | str,
        nodes: Sequence[Host | str] | None = None,
        *,
        node_fields: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> Path:
        """Write a grid TOML cluster config for `nodes` (default: all hosts; the first is the
        head). `node_fields` are added to every node; `extra` are top-level keys or tables
        (e.g. `backend={"port": 6379}`), and may override `name`."""
        chosen = [self.host(n) for n in nodes] if nodes is not None else self.hosts
        if "nodes" in extra:
            raise ValueError("pass nodes= to choose hosts, node_fields= to extend them")
        entries = []
        for i, h in enumerate(chosen):
            entries.append(
                {
                    "name": h.name,
                    "host": h.ip,
                    "user": "root",
                    "port": 22,
                    "role": "head" if i == 0 else "worker",
                    "transport": "ssh",
                    "ssh_key_path": str(self.client_key),
                    "known_hosts": str(self.known_hosts),
                    **(node_fields or {}),
                }
            )
        # The job store in the workdir, not in the real /root that the hosts share (job_queue.py).
        doc: dict[str, Any] = {"name": "testbed", **extra, "nodes": entries,
                               "queue": {"directory": str(self.workdir / "jobs"), **extra.get("queue", {})}}
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(tomli_w.dumps(doc))
        return out


def remove_stale(prefix: str = "gt") -> list[str]:
    """Delete the namespaces and links left by testbeds whose creating process is gone (it was
    SIGKILLed, so no finalizer ran), killing any process still inside them. A live creator's
    testbed is never touched, also one in the middle of its setup. Returns what it removed."""
    name_re = re.compile(rf"^{re.escape(prefix)}([0-9a-z]{{5}})[0-9a-z]+?(h\d+|v\d+|br)$")

    def stale(name: str) -> bool:
        m = name_re.match(name)
        return m is not None and not Path(f"/proc/{int(m.group(1), 36)}").exists()

    netns_out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    links_out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30).stdout
    namespaces = [n for n in (line.split()[0] for line in netns_out.splitlines() if line.strip()) if stale(n)]
    links = [n for n in (line.split(":")[1].strip().split("@")[0] for line in links_out.splitlines()) if stale(n)]
    for ns in namespaces:  # normally empty: the hosts die with their creator (PR_SET_PDEATHSIG)
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30).stdout
        for pid in pids.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    # Veths first: deleting one removes its pair at once; bridges go once they have no ports.
    veths = [n for n in links if not n.endswith("br")]
    bridges = [n for n in links if n.endswith("br")]
    _ip_run_force(
        [f"link del {v}" for v in veths] + [f"netns del {n}" for n in namespaces] + [f"link del {b}" for b in bridges]
    )
    return namespaces + links


# ---------------------------------------------------------------------- helpers


def _teardown(st: _State) -> None:
    """Kill the hosts, then delete their links and namespaces; tolerates a half-made setup."""
    for proc in st.launchers:
        if proc.poll() is None:
            proc.kill()  # unshare --fork ignores SIGTERM; --kill-child takes the host's PID 1 along
    for proc in st.launchers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    # A host's PID 1 exits only after every process in it is gone: then its namespace is empty.
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in st.init_pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    # Deleting the root-side veth removes the pair at once (a netns's own cleanup is deferred).
    cmds = [f"link del {v}" for v in st.veths] + [f"netns del {n}" for n in st.namespaces]
    if st.bridge:
        cmds.append(f"link del {st.bridge}")
    _ip_run_force(cmds)
    st.launchers.clear()
    st.init_pids.clear()


def _ip_run_force(cmds: Sequence[str]) -> None:
    """Run ip commands, going on past failures (deleting what a half-made setup never created)."""
    if cmds:
        subprocess.run(
            ["ip", "-force", "-batch", "-"], input="\n".join(cmds) + "\n", text=True, capture_output=True, timeout=30
        )


def _ip_batch(cmds: Sequence[str], netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    res = subprocess.run(argv, input="\n".join(cmds) + "\n", text=True, capture_output=True, timeout=30)
    if res.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed: {res.stderr.strip()}\ncommands:\n" + "\n".join(cmds))


def _free_subnet() -> int:
    """An X with no 10.213.X.0/24 address or route on this machine, starting from our PID."""
    text = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    text += subprocess.run(["ip", "-o", "-4", "route"], capture_output=True, text=True, check=True).stdout
    used = {int(m) for m in re.findall(rf"\b{re.escape(SUBNET_BASE)}\.(\d+)\.", text)}
    start = os.getpid() % 254 + 1
    for k in range(254):
        x = (start + k - 1) % 254 + 1
        if x not in used:
            ipaddress.ip_network(f"{SUBNET_BASE}.{x}.0/24")  # sanity: a valid network
            return x
    raise TestbedError(f"no free {SUBNET_BASE}.X.0/24 subnet (stale testbeds? see `ip -o addr`)")


def _keygen(keys: Sequence[tuple[Path, str]]) -> None:
    """Make ed25519 keys with ssh-keygen (paramiko cannot), all in parallel."""
    procs = []
    for path, comment in keys:
        for p in (path, path.with_suffix(".pub")):
            p.unlink(missing_ok=True)
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
        procs.append(
            (path, subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        )
    for path, proc in procs:
        out, _ = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise TestbedError(f"ssh-keygen for {path} failed: {out.decode(errors='replace')}")


def _child_pid(pid: int) -> int:
    """The single child of `unshare` (PID 1 inside the host); bounded wait for the fork."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for _ in range(200):
        try:
            kids = children.read_text().split()
        except FileNotFoundError:
            kids = []
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    raise TestbedError(f"launcher {pid} has no child process")


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_open(ip: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.2):
            return True
    except OSError:
        return False


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def _q(p: Path | str) -> str:
    return shlex.quote(str(p))


def _qc(value: Path | str) -> str:
    """Quote a value for sshd_config / ssh_config (double quotes, which both accept)."""
    return '"' + str(value) + '"'
