"""The local transport's timeouts end the whole process tree, and bad limits are clear errors."""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import pytest

from grid_core.builtin.local import LocalTransport
from grid_core.types import TransportError


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie waiting for its parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_timeout_kills_what_the_command_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "sleep.pid"
    script = f"sleep 30 & echo $! > {pid_file}; wait"  # the shell's child outlives a kill of the shell alone
    start = time.monotonic()
    with pytest.raises(TransportError, match="timed out after 1 s"):
        LocalTransport().run(["sh", "-c", script], timeout=1)
    assert time.monotonic() - start < 3
    sleeper = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(sleeper), f"sleep {sleeper} still runs after the timeout"


def test_the_issue_command_returns_at_its_timeout() -> None:
    start = time.monotonic()
    with pytest.raises(TransportError):
        LocalTransport().run(["sh", "-c", "sleep 4; :"], timeout=1)
    assert time.monotonic() - start < 2.5


def test_commands_that_finish_are_untouched_and_inf_means_no_limit() -> None:
    result = LocalTransport().run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=math.inf)
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    group = LocalTransport().run(["sh", "-c", "ps -o pid=,pgid= -p $$"]).stdout.split()
    assert group[0] == group[1] and int(group[1]) != os.getpgrp()  # its own process group


@pytest.mark.parametrize("bad", [math.nan, -1.0, -math.inf])
def test_a_bad_limit_is_a_clear_error(bad: float) -> None:
    with pytest.raises(TransportError, match="positive number of seconds"):
        LocalTransport().run(["true"], timeout=bad)


def test_stdin_reaches_the_command_then_eof() -> None:
    big = "".join(f"line {i:07d} ünïcode\n" for i in range(50_000))  # over 1 MB: more than any pipe holds
    assert len(big.encode()) > 1_000_000
    seen: list[str] = []
    result = LocalTransport().run(["cat"], stdin=big, on_output=lambda s, t: seen.append(t), timeout=30)
    assert result.exit_status == 0 and result.stdout == big and "".join(seen) == big
    payload = bytes(range(256)) * 4096  # binary, 1 MiB, through a command that writes as it reads
    digest = LocalTransport().run(["sha256sum"], stdin=payload, timeout=30).stdout.split()[0]
    assert digest == hashlib.sha256(payload).hexdigest()
    # A command that never reads its stdin is no error, and without stdin a command reads EOF.
    assert LocalTransport().run(["true"], stdin=big, timeout=30).exit_status == 0
    assert LocalTransport().run(["cat"], timeout=30).stdout == ""


def test_a_timeout_holds_while_stdin_is_still_being_written() -> None:
    start = time.monotonic()
    with pytest.raises(TransportError, match="timed out after 1 s"):
        LocalTransport().run(["sh", "-c", "sleep 30"], stdin=b"x" * 4_000_000, timeout=1)
    assert time.monotonic() - start < 3


def test_the_service_starter_reads_its_config_from_stdin_not_argv() -> None:
    """The config (the job's environment, everything) comes on stdin; checked here up to the
    point where it would connect to Ray."""
    import sys

    starter = [sys.executable, "-m", "grid_plugin_ray_backend.service", "--address", "127.0.0.1:1",
               "--namespace", "n", "--head", "h", "--directory", "/nonexistent"]
    result = LocalTransport().run(starter, stdin="[]", timeout=60)
    assert result.exit_status == 70 and "not a JSON object" in result.stderr, result.stderr
    result = LocalTransport().run(starter, stdin="{", timeout=60)
    assert result.exit_status == 70 and "stdin is not JSON" in result.stderr, result.stderr
    old_style = LocalTransport().run([*starter, '{"env": {"SECRET": "x"}}'], timeout=60)
    assert old_style.exit_status == 2 and "unrecognized arguments" in old_style.stderr  # argv carries none
