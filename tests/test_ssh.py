"""The ssh transport, `grid exec` and `grid doctor` against real sshd servers on test hosts.

One Testbed (3 hosts) serves the whole module. Tests that break a host (link down, sshd killed,
new host key) put it back before they end. HOME is a fresh directory in every test (conftest),
so nothing reads or writes the real ~/.ssh.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from grid_core.builtin.local import LocalTransport
from grid_core.cluster import Cluster
from grid_core.config import load_file
from grid_core.plugins import PluginHost
from grid_core.types import AuthError, HostKeyError, TransportError
from tests.conftest import grid
from tests.testbed import Testbed, require_testbed

realhost = pytest.mark.realhost
CONNECT_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    require_testbed()
    with Testbed(3, tmp_path_factory.mktemp("ssh-bed"), prefix="gs") as testbed:
        yield testbed


@pytest.fixture
def config(bed: Testbed, tmp_path: Path) -> Path:
    return bed.write_grid_config(tmp_path / "grid.toml", node_fields={"connect_timeout": CONNECT_TIMEOUT})


def exec_json(config: Path, *argv: str, expect: int = 0) -> dict[str, dict[str, Any]]:
    result = grid("-c", str(config), "exec", "--json", "--", *argv)
    assert result.returncode == expect, result.stderr
    return {r["node"]: r for r in json.loads(result.stdout)}


def open_cluster(config: Path) -> Cluster:
    """The cluster with this process's own ssh transports (no keeper), whatever the test run has
    imported: these tests watch paramiko in this process."""
    loaded = load_file(config)
    return Cluster(attrs.evolve(loaded, ssh=attrs.evolve(loaded.ssh, persist_seconds=0)), PluginHost())


def ip(bed: Testbed, name: str) -> str:
    return bed.host(name).ip


# ---------------------------------------------------------------------- exec and files


@realhost
def test_exec_runs_on_every_host(config: Path) -> None:
    results = exec_json(config, "hostname")
    assert {name: r["stdout"] for name, r in results.items()} == {f"host{i}": f"host{i}\n" for i in (1, 2, 3)}
    assert all(r["exit_status"] == 0 and r["error"] is None for r in results.values())


@realhost
def test_exit_status_streams_and_environment(config: Path) -> None:
    results = exec_json(config, "sh", "-c", "echo out; echo err >&2; exit 3", expect=3)
    assert all((r["exit_status"], r["stdout"], r["stderr"]) == (3, "out\n", "err\n") for r in results.values())
    with open_cluster(config) as cluster:
        transport = cluster.transport(cluster.config.node("host1"))
        value = "$(id) 'x' \"y\" `z`;"
        assert transport.run(["printenv", "V"], env={"V": value}).stdout == value + "\n"
        seen: list[tuple[str, str]] = []
        result = transport.run(["sh", "-c", "echo a; echo b >&2"], on_output=lambda s, t: seen.append((s, t)))
        assert result.exit_status == 0 and sorted(seen) == [("stderr", "b\n"), ("stdout", "a\n")]
        with pytest.raises(TransportError, match="not valid"):
            transport.run(["true"], env={"A;B": "1"})


@realhost
def test_connection_is_reused_and_command_timeout_holds(config: Path) -> None:
    with open_cluster(config) as cluster:
        transport = cluster.transport(cluster.config.node("host2"))
        first = transport.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout
        second = transport.run(["sh", "-c", "echo $SSH_CONNECTION"]).stdout
        assert first == second  # same client port: one connection
        start = time.monotonic()
        with pytest.raises(TransportError, match=r"timed out after 0.5 s"):
            transport.run(["sleep", "5"], timeout=0.5)
        assert time.monotonic() - start < 2
        assert transport.run(["echo", "still usable"]).stdout == "still usable\n"


def _processes(bed: Testbed, host: str, prefix: str) -> list[str]:
    """The command lines on the host that start with prefix (a test's own marker sleep)."""
    listing = bed.host_exec(host, ["ps", "-eo", "args"], check=True).stdout
    return [line for line in listing.splitlines() if line.startswith(prefix)]


@realhost
def test_a_timeout_ends_the_remote_command_and_what_it_started(bed: Testbed, config: Path) -> None:
    def sleepers() -> list[str]:
        return _processes(bed, "host1", "sleep 31.")

    with open_cluster(config) as cluster:
        transport = cluster.transport(cluster.config.node("host1"))
        with pytest.raises(TransportError, match=r"timed out after 0\.5 s"):
            transport.run(["sh", "-c", "sleep 31.7 & sleep 31.6; :"], timeout=0.5)
        deadline = time.monotonic() + 3
        while sleepers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sleepers() == []
        # A timed command's output is its own: the process-group line grid reads is not in it.
        result = transport.run(["sh", "-c", "echo out; echo err >&2"], timeout=10)
        assert (result.stdout, result.stderr) == ("out\n", "err\n")
        with pytest.raises(TransportError, match="positive number of seconds"):
            transport.run(["true"], timeout=float("nan"))
        assert transport.run(["echo", "no limit"], timeout=float("inf")).stdout == "no limit\n"


# Values a shell would mangle if they were ever quoted, split or expanded on the way.
TRICKY_VALUES = ["a b", "it's", '"quoted"', "$HOME $(touch /tmp/pwned) `id` ${X:-y}", "back\\slash\\n\\",
                 "line1\nline2\n", "\n\n", "", "ünïcödé ✓ 日本", "  lead and trail  ", "tab\there\r", "'", "-n",
                 "%s %d \\0", "a=b;c|d&e>f<g*?[h]~ !", "export X=1; echo gotcha"]


def tricky_env() -> dict[str, str]:
    # The prologue's own variable names must not break the values that follow them either.
    return {**{f"V{i}": v for i, v in enumerate(TRICKY_VALUES)}, "__grid_nl": "mine", "__grid_env": "mine too"}


# Each variable's bytes, then stdin's, in hex: no newline translation or decoding on the way back.
PRINT_ENV = ["sh", "-c", 'for n; do printenv "$n" | od -An -tx1 -v; echo =; done; od -An -tx1 -v', "sh"]


def printed(stdout: str) -> dict[str, str]:
    *values, rest = (bytes.fromhex(block).decode("utf-8", "surrogateescape") for block in stdout.split("="))
    names = [*(f"V{i}" for i in range(len(values) - 2)), "__grid_nl", "__grid_env"]
    return {**{name: v.removesuffix("\n") for name, v in zip(names, values, strict=True)}, "rest": rest}


@pytest.mark.parametrize("shell", ["sh", "bash"])
@pytest.mark.parametrize("leader", [False, True])
def test_the_remote_prologue_sets_any_value_and_leaves_stdin_to_the_command(shell: str, leader: bool) -> None:
    """What sshd runs (`$SHELL -c LINE`, stdin from the channel), here through a local shell."""
    from grid_plugin_ssh_paramiko.transport import env_line, remote_command

    env = tricky_env()
    line = remote_command([*PRINT_ENV, *env], env, leader=leader)
    assert all(value not in line for value in TRICKY_VALUES if len(value) > 1)  # no value on the command line
    result = LocalTransport().run([shell, "-c", line], stdin=env_line(env) + b"the rest\nof stdin", timeout=30)
    assert result.exit_status == 0, result.stderr
    assert printed(result.stdout) == {**env, "rest": "the rest\nof stdin"}
    with pytest.raises(TransportError, match="NUL"):
        env_line({"A": "x\0y"})


@realhost
def test_env_and_stdin_never_reach_a_command_line(bed: Testbed, config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import paramiko

    marker = f"grid-marker-{secrets.token_hex(8)}"
    sent: list[str] = []  # every command line sshd is asked to run: `ps` may miss a short-lived one
    real_exec = paramiko.Channel.exec_command
    monkeypatch.setattr(paramiko.Channel, "exec_command", lambda self, command: (sent.append(command),
                                                                                 real_exec(self, command))[1])
    with open_cluster(config) as cluster:
        transport = cluster.transport(cluster.config.node("host1"))
        for limit in (math.inf, 30.0):  # without and with the process-group line of timed commands
            results: list[Any] = []

            def job(limit: float = limit, results: list[Any] = results) -> None:
                results.append(transport.run(["sh", "-c", "printenv MARKER; cat; sleep 2"], env={"MARKER": marker},
                                             stdin=f"{marker}-stdin\n", timeout=limit))

            thread = threading.Thread(target=job)
            thread.start()
            listings = []
            deadline = time.monotonic() + 15
            while thread.is_alive() and time.monotonic() < deadline:
                listings.append(bed.host_exec("host1", ["ps", "-eo", "args"], check=True).stdout)
                time.sleep(0.05)
            thread.join(10)
            assert results and results[0].exit_status == 0, results
            assert results[0].stdout == f"{marker}\n{marker}-stdin\n"
            assert sum("printenv MARKER" in listing for listing in listings) >= 3  # it ran while we looked
            assert [listing for listing in listings if marker in listing] == []
        assert sent and [command for command in sent if marker in command] == []


@realhost
def test_env_values_and_stdin_arrive_intact_over_ssh(bed: Testbed, config: Path) -> None:
    env = tricky_env()
    with open_cluster(config) as cluster:
        transport = cluster.transport(cluster.config.node("host2"))
        for limit in (math.inf, 30.0):
            result = transport.run([*PRINT_ENV, *env], env=env, stdin="the rest\nof stdin", timeout=limit)
            assert result.exit_status == 0, result.stderr
            assert printed(result.stdout) == {**env, "rest": "the rest\nof stdin"}
        assert bed.host_exec("host2", ["ls", "/tmp"]).stdout.split().count("pwned") == 0
        # Bytes that are not UTF-8 (os.environ holds them as surrogates) arrive as the same bytes.
        raw = transport.run(["sh", "-c", 'printenv B | od -An -tx1'], env={"B": "\udcff\udcfe"}).stdout
        assert raw.split() == ["ff", "fe", "0a"]
        big = "".join(f"line {i:07d} ünïcode\n" for i in range(50_000))  # over 1 MB, more than any window
        assert transport.run(["cat"], env={"A": "1"}, stdin=big, timeout=60).stdout == big
        blob = os.urandom(32 * 2**20)  # binary, and megabytes: what a memory put sends through the relay
        summed = transport.run(["sha256sum"], stdin=blob, timeout=120)
        assert summed.stdout.split()[0] == hashlib.sha256(blob).hexdigest(), summed.stderr
        payload = bytes(range(256)) * 4096
        digest = transport.run(["sha256sum"], stdin=payload, timeout=60).stdout.split()[0]
        assert digest == hashlib.sha256(payload).hexdigest()
        assert transport.run(["true"], stdin=big, timeout=60).exit_status == 0  # never read: no error, no hang
        start = time.monotonic()
        assert transport.run(["cat"], timeout=10).stdout == ""  # without stdin, EOF at once
        assert time.monotonic() - start < 2


@realhost
def test_a_timeout_with_env_and_unread_stdin_still_ends_the_command(bed: Testbed, config: Path) -> None:
    def sleepers() -> list[str]:
        return _processes(bed, "host3", "sleep 32.")

    with open_cluster(config) as cluster:
        transport = cluster.transport(cluster.config.node("host3"))
        start = time.monotonic()
        with pytest.raises(TransportError, match=r"timed out after 0\.5 s"):
            transport.run(["sh", "-c", "sleep 32.7 & sleep 32.6; :"], env={"X": "1"}, stdin=b"x" * 4_000_000,
                          timeout=0.5)
        assert time.monotonic() - start < 2
        deadline = time.monotonic() + 3
        while sleepers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sleepers() == []
        assert transport.run(["echo", "still usable"], env={"X": "1"}).stdout == "still usable\n"


@realhost
def test_copy_both_ways(bed: Testbed, config: Path, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 400  # binary, 100 KiB
    local = tmp_path / "payload.bin"
    local.write_bytes(payload)
    local.chmod(0o750)
    with open_cluster(config) as cluster:
        transport = cluster.transport(cluster.config.node("host3"))
        transport.put(str(local), "/tmp/payload.bin")
        seen = bed.host_exec("host3", ["sh", "-c", "stat -c %a /tmp/payload.bin; sha256sum < /tmp/payload.bin"])
        local_sum = subprocess.run(["sha256sum"], input=payload, capture_output=True, check=True).stdout.decode()
        assert seen.stdout.split("\n")[0] == "750" and seen.stdout.split("\n")[1].split()[0] == local_sum.split()[0]
        back = tmp_path / "back.bin"
        transport.get("/tmp/payload.bin", str(back))
        assert back.read_bytes() == payload
        with pytest.raises(TransportError, match="cannot copy host3:/tmp/missing"):
            transport.get("/tmp/missing", str(tmp_path / "nothing"))


@realhost
def test_arguments_arrive_literally(bed: Testbed, config: Path) -> None:
    tricky = ["a b", "it's", '"quoted"', "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "; touch /tmp/pwned",
              "$HOME", "*", "x\ny", ""]
    results = exec_json(config, "printf", "[%s]\\n", *tricky)
    expected = "".join(f"[{arg}]\n" for arg in tricky)
    assert {r["stdout"] for r in results.values()} == {expected}
    # Taken literally, this names a file in a directory "/tmp/x; touch " that does not exist.
    failed = exec_json(config, "touch", "/tmp/x; touch /tmp/pwned", expect=1)
    assert all("x; touch /tmp/pwned" in r["stderr"] for r in failed.values())
    exec_json(config, "touch", "/tmp/y; echo injected >&2 #")
    for host in bed.hosts:
        listing = bed.host_exec(host, ["ls", "-1", "/tmp"]).stdout.splitlines()
        assert "y; echo injected >&2 #" in listing and "pwned" not in listing


def test_cli_help_does_not_import_paramiko() -> None:
    code = ("import sys; from grid_core.cli import cli; "
            "cli.main(['--help'], standalone_mode=False); cli.main(['plugins', 'list'], standalone_mode=False); "
            "assert 'paramiko' not in sys.modules, 'paramiko imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------- ~/.ssh/config


def test_resolution_layers_grid_config_over_ssh_config(isolated_home: Path) -> None:
    from grid_core.config import NodeConfig, SshSettings
    from grid_plugin_ssh_paramiko.target import resolve_target

    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "id_lab").write_text("not read here")
    (ssh_dir / "config").write_text(
        "Host gpu1\n  HostName 192.0.2.7\n  User alice\n  Port 2222\n  IdentityFile ~/.ssh/id_lab\n"
        "  IdentityFile ~/.ssh/id_missing\n  IdentitiesOnly yes\n  HostKeyAlias gpu1.lab\n"
        "  ProxyJump bob@gate:2200,gate2\n  UserKnownHostsFile ~/.ssh/lab_known_hosts\n"
        "Host gate2\n  HostName 192.0.2.9\n"
    )
    target, options = resolve_target(NodeConfig(name="g", host="gpu1"), SshSettings())
    assert (target.hostname, target.port, target.user) == ("192.0.2.7", 2222, "alice")
    assert target.key_files == (str(ssh_dir / "id_lab"),) and target.only_named_keys  # missing file skipped
    assert target.host_key_name == "[gpu1.lab]:2222"
    assert [(j.alias, j.hostname, j.port, j.user, j.key_files) for j in target.jumps] == [
        ("gate", "gate", 2200, "bob", target.key_files),  # the node's key opens the jump hosts too
        ("gate2", "192.0.2.9", 22, getpass.getuser(), target.key_files)]
    assert options.known_hosts == ssh_dir / "lab_known_hosts" and not options.accept_new
    assert options.connect_timeout == 10.0

    node = NodeConfig(name="g", host="gpu1", user="root", port=22, ssh_key_path="~/k", known_hosts="/kh",
                      host_key_policy="accept-new", connect_timeout=3)
    target, options = resolve_target(node, SshSettings(known_hosts="/cluster_kh"))
    assert (target.user, target.port, target.key_files) == ("root", 22, (str(isolated_home / "k"),))
    assert target.host_key_name == "gpu1.lab" and target.keys_label() == f"key {isolated_home / 'k'}"
    assert (options.known_hosts, options.accept_new, options.connect_timeout) == (Path("/kh"), True, 3)

    plain, options = resolve_target(NodeConfig(name="p", host="10.1.2.3"), SshSettings(host_key_policy="accept-new"))
    assert (plain.hostname, plain.port, plain.key_files, plain.only_named_keys) == ("10.1.2.3", 22, (), False)
    assert plain.keys_label() == "ssh-agent and ~/.ssh/id_*" and options.accept_new
    assert options.known_hosts == isolated_home / ".ssh" / "known_hosts"


def test_paramiko_is_imported_without_invoke_unless_match_exec_needs_it(isolated_home: Path) -> None:
    code = ("import sys; from grid_plugin_ssh_paramiko.target import import_paramiko; import_paramiko(); "
            "print('invoke' in sys.modules, 'paramiko' in sys.modules); import invoke")
    run = lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)  # noqa: E731
    first = run()
    assert first.returncode == 0 and first.stdout == "False True\n", first.stderr  # invoke importable afterwards
    (isolated_home / ".ssh").mkdir()
    (isolated_home / ".ssh" / "config").write_text('Match exec "true"\n  User x\n')
    assert run().stdout == "True True\n"


def install_user_ssh(bed: Testbed, home: Path, config_text: str, known_hosts: bool = True) -> Path:
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(bed.client_key, ssh_dir / "lab_key")
    (ssh_dir / "lab_key").chmod(0o600)
    if known_hosts:
        shutil.copy(bed.known_hosts, ssh_dir / "known_hosts")
    (ssh_dir / "config").write_text(config_text)
    return ssh_dir


@realhost
def test_ssh_config_alias_and_proxy_jump(bed: Testbed, isolated_home: Path, tmp_path: Path) -> None:
    install_user_ssh(bed, isolated_home, (
        f"Host box\n  HostName {ip(bed, 'host1')}\n  User root\n  IdentityFile ~/.ssh/lab_key\n\n"
        f"Host behind\n  HostName {ip(bed, 'host2')}\n  User root\n  IdentityFile ~/.ssh/lab_key\n"
        "  ProxyJump box\n"
    ))
    cfg = tmp_path / "alias.toml"
    cfg.write_text('[[nodes]]\nname = "a"\nhost = "box"\nrole = "head"\n'
                   '[[nodes]]\nname = "b"\nhost = "behind"\n'
                   '[[nodes]]\nname = "c"\nhost = "box"\nuser = "nobody"\n')
    results = exec_json(cfg, "sh", "-c", "hostname; echo $SSH_CONNECTION", expect=255)
    assert results["a"]["stdout"].split("\n")[0] == "host1"
    behind_host, behind_conn = results["b"]["stdout"].split("\n")[:2]
    assert behind_host == "host2" and behind_conn.split()[0] == ip(bed, "host1")  # arrived from the jump host
    # grid's own per-node user wins over the file's
    assert results["c"]["error"].startswith(f"authentication failed for nobody@{ip(bed, 'host1')}")


# ---------------------------------------------------------------------- host keys and auth


@realhost
def test_unknown_host_key_refused_then_accept_new_records_it(bed: Testbed, tmp_path: Path) -> None:
    known = tmp_path / "fresh_known_hosts"
    strict = bed.write_grid_config(tmp_path / "strict.toml", ["host1"], node_fields={"known_hosts": str(known)})
    result = exec_json(strict, "true", expect=255)["host1"]
    assert "is unknown" in result["error"] and "ssh-keyscan" in result["error"] and "accept-new" in result["error"]
    assert not known.exists()

    lenient = bed.write_grid_config(tmp_path / "accept.toml", ["host1"], node_fields={"known_hosts": str(known)},
                                    ssh={"host_key_policy": "accept-new"})
    assert exec_json(lenient, "hostname")["host1"]["stdout"] == "host1\n"
    key_type, key = bed.host("host1").host_key_path.with_suffix(".pub").read_text().split()[:2]
    assert known.read_text() == f"{ip(bed, 'host1')} {key_type} {key}\n"
    assert exec_json(strict, "hostname")["host1"]["stdout"] == "host1\n"  # now known


@realhost
def test_changed_host_key_is_refused_even_with_accept_new(bed: Testbed, tmp_path: Path) -> None:
    old_known = tmp_path / "old_known_hosts"
    shutil.copy(bed.known_hosts, old_known)
    bed.regenerate_host_key("host3", update_known_hosts=True)  # the shared file stays right for other tests
    cfg = bed.write_grid_config(tmp_path / "changed.toml", ["host3"], node_fields={"known_hosts": str(old_known)},
                                ssh={"host_key_policy": "accept-new"})
    error = exec_json(cfg, "true", expect=255)["host3"]["error"]
    assert "has CHANGED" in error and "man-in-the-middle" in error and "ssh-keygen -R" in error
    assert old_known.read_text() == (tmp_path / "old_known_hosts").read_text()
    with open_cluster(cfg) as cluster, pytest.raises(HostKeyError):
        cluster.transport(cluster.config.node("host3")).run(["true"])


@realhost
def test_known_hosts_markers_are_understood(bed: Testbed, tmp_path: Path) -> None:
    key_type, key = bed.host("host1").host_key_path.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "marked_known_hosts"
    # paramiko's own loader raises InvalidHostKey at the first marker line and reads nothing after it
    known.write_text(f"@cert-authority *.lab {key_type} {key}\nnot a valid line\n{bed.known_hosts.read_text()}")
    cfg = bed.write_grid_config(tmp_path / "marked.toml", ["host1"], node_fields={"known_hosts": str(known)},
                                ssh={"host_key_policy": "accept-new"})
    assert exec_json(cfg, "hostname")["host1"]["stdout"] == "host1\n"

    known.write_text(f"{bed.known_hosts.read_text()}@revoked * {key_type} {key}\n")
    before = known.read_text()
    error = exec_json(cfg, "true", expect=255)["host1"]["error"]
    assert "REVOKED" in error and str(known) in error  # refused although listed, even with accept-new
    assert known.read_text() == before


@realhost
def test_wrong_key_is_an_authentication_error(bed: Testbed, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    cfg = bed.write_grid_config(tmp_path / "wrong.toml", ["host2"], node_fields={"ssh_key_path": str(wrong)})
    error = exec_json(cfg, "true", expect=255)["host2"]["error"]
    assert error == f"authentication failed for root@{ip(bed, 'host2')} (key {wrong})"
    with open_cluster(cfg) as cluster, pytest.raises(AuthError):
        cluster.transport(cluster.config.node("host2")).run(["true"])


# ---------------------------------------------------------------------- hosts down


@realhost
def test_hosts_down_are_reported_within_the_timeout(bed: Testbed, config: Path) -> None:
    bed.link_down("host2")  # packets vanish: only the connect timeout ends the wait
    bed.kill_sshd("host3")  # the port refuses at once
    try:
        start = time.monotonic()
        results = exec_json(config, "hostname", expect=255)
        wall = time.monotonic() - start
    finally:
        bed.link_up("host2")
        bed.start_sshd("host3")
    assert results["host1"]["stdout"] == "host1\n" and results["host1"]["seconds"] < 1.0
    assert results["host2"]["error"].endswith(f"timed out after {CONNECT_TIMEOUT:g} s")
    assert CONNECT_TIMEOUT - 0.1 < results["host2"]["seconds"] < CONNECT_TIMEOUT + 0.5
    assert "connection refused" in results["host3"]["error"] and results["host3"]["seconds"] < 0.5
    assert wall < CONNECT_TIMEOUT + 3  # start-up plus one timeout, not a sum


# ---------------------------------------------------------------------- doctor and metrics


@realhost
def test_doctor_reports_healthy_and_broken_hosts(bed: Testbed, tmp_path: Path) -> None:
    healthy = bed.write_grid_config(tmp_path / "healthy.toml")
    result = grid("-c", str(healthy), "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 of 3 nodes ready" in result.stdout

    old_ray = bed.workdir / "old-ray-python"  # the workdir is visible inside every host
    old_ray.write_text("#!/bin/sh\necho python=3.11.9\necho engine=2.0.0\n")  # as Ray's engine probe answers
    old_ray.chmod(0o755)
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    cfg = bed.write_grid_config(tmp_path / "broken.toml", node_fields={"gpu_count": 0})
    text = cfg.read_text()
    nodes = text.split("[[nodes]]")  # host1 healthy; host2 old ray and a GPU; host3 refuses our key
    nodes[2] += f'python = "{old_ray}"\n'
    nodes[2] = nodes[2].replace("gpu_count = 0", "gpu_count = 1")
    nodes[3] = nodes[3].replace(str(bed.client_key), str(wrong))
    cfg.write_text("[[nodes]]".join(nodes))
    result = grid("-c", str(cfg), "doctor", "--json")
    assert result.returncode == 1, result.stderr
    report = {row["node"]: row for row in json.loads(result.stdout)}
    checks = {name: {c["name"]: (c["ok"], c["detail"]) for c in row["checks"]} for name, row in report.items()}
    assert report["host1"]["ok"]
    assert set(checks["host1"]) == {"reachable", "host_key", "auth", "python", "plugins", "ray"}
    assert checks["host1"]["ray"][0] and checks["host1"]["python"][1].startswith("3.")
    head_ray = checks["host1"]["ray"][1].split()[0]
    assert checks["host2"]["ray"] == (False, f"2.0.0, but the head has {head_ray}: install ray=={head_ray}")
    assert checks["host2"]["gpu"][0] is False and "nvidia-smi" in checks["host2"]["gpu"][1]
    assert checks["host3"]["auth"][0] is False and "authentication failed" in checks["host3"]["auth"][1]
    assert checks["host3"]["host_key"] == (True, "known")

    table = grid("-c", str(cfg), "doctor")
    assert table.returncode == 1 and "FAIL" in table.stdout and "1 of 3 nodes ready" in table.stdout
    assert "host3 auth: authentication failed" in table.stdout


@realhost
def test_cluster_status_reads_procfs_over_ssh(config: Path) -> None:
    result = grid("-c", str(config), "cluster", "status", "--json")
    assert result.returncode == 0, result.stderr
    for row in json.loads(result.stdout)["nodes"]:
        assert row["reachable"] and row["metrics_source"] == "procfs", row
        assert 0 <= row["cpu_percent"] <= 100 and 0 < row["memory_percent"] < 100
        assert row["cpus"] == (os.cpu_count() or 0)
