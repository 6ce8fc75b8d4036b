"""Presence: terminal access times and X idle time, as pure functions, plus one real pty."""

from __future__ import annotations

import os
import time

import pytest

from grid_core import presence
from grid_core.presence import TerminalEntry, combine, owner_idle_seconds, terminal_idle_seconds

NOW = 1_000_000.0
ENTRIES = [
    TerminalEntry("/dev/pts/0", NOW - 600, 1000),  # the owner's old shell
    TerminalEntry("/dev/pts/3", NOW - 42, 1000),  # the owner's terminal, used 42 s ago
    TerminalEntry("/dev/pts/5", NOW - 2, 1001),  # someone else's, just now
    TerminalEntry("/dev/tty1", NOW - 9000, 0),
]


def test_the_most_recent_of_the_owners_terminals() -> None:
    assert terminal_idle_seconds(ENTRIES, NOW, uid=1000) == 42.0
    assert terminal_idle_seconds(ENTRIES, NOW, uid=None) == 2.0  # every user's, for a shared workstation
    assert terminal_idle_seconds(ENTRIES, NOW, uid=4242) is None
    assert terminal_idle_seconds([], NOW) is None
    assert terminal_idle_seconds([("/dev/pts/1", NOW + 30, 7)], NOW, uid=7) == 0.0  # a clock step: not below 0


def test_the_most_recent_signal_wins() -> None:
    assert combine(42.0, 5.0) == 5.0
    assert combine(None, 5.0) == 5.0
    assert combine(None, None) is None
    assert owner_idle_seconds(NOW, 1000, ENTRIES, x_idle=3.5) == 3.5  # the desktop was used more recently
    assert owner_idle_seconds(NOW, 1000, ENTRIES, x_idle=None) == 42.0
    assert owner_idle_seconds(NOW, 1000, [], x_idle=None) is None


def test_x_idle_needs_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    assert presence.XIdle().seconds() is None
    assert presence.XIdle().seconds(display=":4242") is None  # no such server (or no libXss): unknown


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_touching_a_terminal_drops_the_idle_time() -> None:
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        old = time.time() - 3600
        os.utime(path, (old, os.stat(path).st_mtime))

        def ours() -> list[TerminalEntry]:
            return [e for e in presence.terminal_entries() if e.path == path]

        assert [e.uid for e in ours()] == [os.getuid()]  # listed as the user's own terminal
        before = terminal_idle_seconds(ours(), time.time(), uid=os.getuid())
        assert before is not None and before >= 3500
        os.write(master, b"x\n")  # someone types ...
        os.read(slave, 2)  # ... and the shell reads it: the kernel may move the atime (every 8 s at most)
        os.utime(path, None)  # as it would: now
        after = terminal_idle_seconds(ours(), time.time(), uid=os.getuid())
        assert after is not None and after < 5
        # The machine-wide reading sees it too: no terminal of the user's is more recent than now.
        total = owner_idle_seconds(uid=os.getuid(), x_idle=None)
        assert total is not None and total < 5
    finally:
        os.close(master)
        os.close(slave)
