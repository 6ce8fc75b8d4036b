"""The test-host testbed itself: real sshd per host, private hostname, /tmp and PID namespace."""

from __future__ import annotations

import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import tests.testbed as testbed
from tests.testbed import Testbed, require_testbed


def _ssh(tb: Testbed, host: str, command: str) -> subprocess.Popen[str]:
    """Start the OpenSSH client as a user would, through the testbed's ssh_config."""
    return subprocess.Popen(
        ["ssh", "-F", str(tb.ssh_config), host, command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _leftovers(tb: Testbed) -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    found = [n for n in (h.namespace for h in tb.hosts) if n in netns]
    found += [v for v in [*(h.veth for h in tb.hosts), f"{tb.tag}br"] if f" {v}:" in links or f" {v}@" in links]
    found += [f"pid {h.launcher_pid}" for h in tb.hosts if Path(f"/proc/{h.launcher_pid}").exists()]
    found += [f"pid {h.init_pid}" for h in tb.hosts if testbed._alive(h.init_pid)]
    return found


@pytest.mark.realhost
def test_three_hosts_over_real_ssh(tmp_path: Path) -> None:
    require_testbed()
    tb = Testbed(n_hosts=3, workdir=tmp_path)
    try:
        names = [h.name for h in tb.hosts]
        assert names == ["host1", "host2", "host3"]
        assert len({h.ip for h in tb.hosts}) == 3

        # Each host answers over real ssh (host-key checked against known_hosts) with its own name,
        # and leaves a mark in its own /tmp and /var/tmp.
        procs = {h: _ssh(tb, h, f"hostname && touch /tmp/only-on-{h} /var/tmp/only-on-{h}") for h in names}
        for h, proc in procs.items():
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
            assert out.strip() == h

        for h in names:
            for tmp in ("/tmp", "/var/tmp"):
                in_tmp = set(tb.host_exec(h, ["ls", "-A", tmp], check=True).stdout.split())
                assert f"only-on-{h}" in in_tmp
                assert not {f"only-on-{o}" for o in names if o != h} & in_tmp
                assert not Path(tmp, f"only-on-{h}").exists()  # not in the root namespace's either

            # Its own PID namespace: a handful of processes, PID 1 is the host's launcher.
            ps = tb.host_exec(h, ["ps", "-e", "-o", "pid=,comm="], check=True).stdout.splitlines()
            assert len(ps) < 10, ps
            assert ps[0].split() == ["1", "sh"]
            assert any(line.split()[1] == "sshd" for line in ps)

        config = tomllib.loads(tb.write_grid_config(tmp_path / "grid.toml").read_text())
        assert [(n["name"], n["host"], n["role"]) for n in config["nodes"]] == [
            ("host1", tb.hosts[0].ip, "head"),
            ("host2", tb.hosts[1].ip, "worker"),
            ("host3", tb.hosts[2].ip, "worker"),
        ]
    finally:
        tb.close()
    assert _leftovers(tb) == []
    tb.close()  # a second close is harmless


@pytest.mark.realhost
def test_faults_link_down_changed_key_sshd_killed(tmp_path: Path) -> None:
    require_testbed()
    with Testbed(n_hosts=2, workdir=tmp_path, cpus={"host2": "0"}) as tb:
        h1, h2 = tb.hosts
        # A host given CPUs runs on them, and so does everything started over SSH there.
        allowed, _ = _ssh(tb, h2.name, "grep Cpus_allowed_list /proc/self/status").communicate(timeout=30)
        assert allowed.split() == ["Cpus_allowed_list:", "0"]
        allowed, _ = _ssh(tb, h1.name, "grep Cpus_allowed_list /proc/self/status").communicate(timeout=30)
        here = next(line for line in Path("/proc/self/status").read_text().splitlines() if "Cpus_allowed_list" in line)
        assert allowed.split() == here.split()  # a host without `cpus` has this machine's

        tb.link_down(h1)
        with pytest.raises(OSError):  # unplugged: the connection times out rather than being refused
            socket.create_connection((h1.ip, 22), timeout=0.3).close()
        tb.link_up(h1)
        socket.create_connection((h1.ip, 22), timeout=2).close()

        tb.regenerate_host_key(h2)
        _, err = _ssh(tb, h2.name, "true").communicate(timeout=30)
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in err

        tb.kill_sshd(h1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((h1.ip, 22), timeout=2).close()
        tb.start_sshd(h1)
        proc = _ssh(tb, h1.name, "hostname")
        assert proc.communicate(timeout=30)[0].strip() == "host1"
    assert _leftovers(tb) == []


def test_require_testbed_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testbed, "testbed_unavailable_reason", lambda: "no namespaces here")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no namespaces here"):
        require_testbed()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no namespaces here"):
        require_testbed()


@pytest.mark.realhost
def test_remove_stale_cleans_up_after_a_killed_run(tmp_path: Path) -> None:
    require_testbed()
    # A run SIGKILLed mid-test: no finalizer runs, its hosts die with it, its links stay behind.
    code = (
        "import sys, time; from pathlib import Path; from tests.testbed import Testbed; "
        f"tb = Testbed(n_hosts=2, workdir=Path({str(tmp_path)!r})); print(tb.tag, flush=True); time.sleep(60)"
    )
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        tag = child.stdout.readline().strip()
        assert tag, "the child made no testbed"
    finally:
        child.kill()
        child.wait(timeout=10)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"{tag}h1" in left
    removed = testbed.remove_stale()
    assert {f"{tag}h1", f"{tag}h2", f"{tag}v1", f"{tag}v2", f"{tag}br"} <= set(removed)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert tag not in links + left
