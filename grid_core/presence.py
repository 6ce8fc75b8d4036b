"""Presence: how long since the machine's owner last used a terminal or the desktop.

Terminals as HTCondor's KeyboardIdle reads them: the access time (st_atime) of the terminal
devices (/dev/tty*, /dev/pts/*), which the kernel moves when the terminal is read (someone types;
Linux updates it at most every 8 s). By default only the devices the user running grid owns count
(a terminal belongs to whoever logged in on it); `uid=None` counts every user's, for a workstation
shared by several people. The desktop's idle time comes from X's XScreenSaver extension (through
ctypes on libXss), only where $DISPLAY is set and the libraries load; elsewhere it is unknown.

The arithmetic is pure (`terminal_idle_seconds`, `combine`) so that tests need no terminal.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

TERMINAL_PATTERNS = ("/dev/tty*", "/dev/pts/*")
# Devices that match the patterns but are no one's keyboard: the controlling-terminal alias, the
# pty multiplexer, and /dev/ttyS*-style serial lines are kept (a serial console is a terminal).
NOT_TERMINALS = frozenset({"/dev/tty", "/dev/pts/ptmx", "/dev/ptmx"})


class TerminalEntry(NamedTuple):
    """One terminal device: its path, access time (Unix seconds) and owner's uid."""

    path: str
    atime: float
    uid: int


def terminal_entries(patterns: Sequence[str] = TERMINAL_PATTERNS) -> list[TerminalEntry]:
    """The terminal devices on this machine; those that vanish or cannot be read are skipped."""
    found = []
    for pattern in patterns:
        for path in glob.glob(pattern):
            if path in NOT_TERMINALS:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode):
                found.append(TerminalEntry(path, st.st_atime, st.st_uid))
    return found


def terminal_idle_seconds(entries: Iterable[TerminalEntry | tuple[str, float, int]], now: float,
                          uid: int | None = None) -> float | None:
    """Seconds since the most recently used terminal was used: those owned by `uid` (every
    user's when None); None when there is no such terminal. Never below 0 (a clock step)."""
    latest = max((atime for _path, atime, owner in entries if uid is None or owner == uid), default=None)
    return None if latest is None else max(0.0, now - latest)


def combine(*idle: float | None) -> float | None:
    """The owner's idle time from several signals: the most recent activity wins (the smallest
    idle time); None when no signal is known."""
    known = [i for i in idle if i is not None]
    return min(known) if known else None


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [("window", ctypes.c_ulong), ("state", ctypes.c_int), ("kind", ctypes.c_int),
                ("til_or_since", ctypes.c_ulong), ("idle", ctypes.c_ulong), ("eventMask", ctypes.c_ulong)]


class XIdle:
    """The X server's idle time through XScreenSaverQueryInfo; None without $DISPLAY, libX11 or
    libXss, or when the server does not answer. Libraries are loaded once; the display is opened
    per query (a closed or restarted server is then no stale handle)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._libs: tuple[ctypes.CDLL, ctypes.CDLL] | None = None
        self._failed = False

    def _load(self) -> tuple[ctypes.CDLL, ctypes.CDLL] | None:
        if self._libs is None and not self._failed:
            try:
                x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
                xss = ctypes.CDLL(ctypes.util.find_library("Xss") or "libXss.so.1")
                x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
                x11.XOpenDisplay.restype = ctypes.c_void_p
                x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
                x11.XDefaultRootWindow.restype = ctypes.c_ulong
                x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
                x11.XFree.argtypes = [ctypes.c_void_p]
                xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
                xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                                      ctypes.POINTER(_XScreenSaverInfo)]
                xss.XScreenSaverQueryInfo.restype = ctypes.c_int
                self._libs = (x11, xss)
            except (OSError, AttributeError):
                self._failed = True
        return self._libs

    def seconds(self, display: str | None = None) -> float | None:
        display = display if display is not None else os.environ.get("DISPLAY")
        if not display:
            return None
        with self._lock:
            libs = self._load()
            if libs is None:
                return None
            x11, xss = libs
            handle = x11.XOpenDisplay(display.encode())
            if not handle:
                return None
            try:
                info = xss.XScreenSaverAllocInfo()
                if not info:
                    return None
                try:
                    if not xss.XScreenSaverQueryInfo(handle, x11.XDefaultRootWindow(handle), info):
                        return None
                    return info.contents.idle / 1000.0
                finally:
                    x11.XFree(info)
            finally:
                x11.XCloseDisplay(handle)


X_IDLE = XIdle()


def owner_idle_seconds(now: float | None = None, uid: int | None = -1,
                       entries: Iterable[TerminalEntry] | None = None,
                       x_idle: float | bool | None = True) -> float | None:
    """Seconds since the owner last used a terminal or the desktop, None when neither is known.

    `uid`: whose terminals count (-1, the default: the user running this; None: every user's).
    `entries`: the terminals to read (default: this machine's). `x_idle`: the desktop's idle
    seconds, None for unknown, or True (the default) to ask the X server."""
    now = time.time() if now is None else now
    uid = os.getuid() if uid == -1 else uid
    terminals = terminal_idle_seconds(terminal_entries() if entries is None else entries, now, uid)
    desktop = X_IDLE.seconds() if x_idle is True else (None if x_idle is False else x_idle)
    return combine(terminals, desktop)
