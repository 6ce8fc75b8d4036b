"""The service's wire protocol as the CLI reads it: a request is one JSON line (with data frames
after it), an answer is JSON frames, one a line, ending with ["exit", status] (service.py writes
them). Here alone, so that a submission by its shortcut (quick.py) loads nothing else of the backend.
"""

from __future__ import annotations

import binascii  # base64's own codec, without base64's imports
import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any

import attrs

from grid_core.errors import GridError

# The protocol's constants, shared with service.py (which imports them from here).
SOCKET = "grid.sock"  # in the head node's directory
SERVICE_ERROR = 70  # the exit status beside an "error" frame: grid's own failure, not a job's
DATA_CHUNK = 4 * 2**20  # bytes per data frame
# A client on another machine asks ("stage": true) for answers of STAGE_MIN bytes or more as a file
# under STAGING in the head's directory, which it copies with its transport (SFTP) and removes.
STAGING = "transfers"
STAGE_MIN = 2**20
CALL_TIMEOUT = 120.0

Output = Callable[[str, str], None]


class ChannelLost(GridError):
    """The connection to the service broke before its answer was whole: no answer, not a refusal."""


@attrs.define
class Answer:
    """What the service sent for one request."""

    status: int = SERVICE_ERROR
    result: Any = None
    events: list[dict[str, Any]] = attrs.Factory(list)
    error: str | None = None
    ended: bool = False  # the exit frame came
    staged: list[str] = attrs.Factory(list)  # files on the head holding the answer's data, in order


class Frames:
    """Splits the service's byte stream into frames and sorts them into an Answer."""

    def __init__(self, on_output: Output | None, on_data: Callable[[bytes], object] | None = None,
                 on_bytes: Callable[[], object] | None = None, on_attempt: Callable[[int], object] | None = None,
                 ) -> None:
        self.on_output, self.on_data, self.on_bytes, self.answer = on_output, on_data, on_bytes, Answer()
        self.on_attempt = on_attempt
        self.pending: list[bytes] = []  # the line so far, in pieces: a data frame is megabytes
        self.text_next = False  # a `text` frame came: the next line is the result's "text", as it is

    def feed(self, data: bytes) -> None:
        if self.on_bytes:  # the link is alive (attach.py watches this)
            self.on_bytes()
        if b"\n" not in data:
            self.pending.append(data)
            return
        *lines, rest = b"".join([*self.pending, data]).split(b"\n")
        self.pending = [rest]
        for line in lines:
            if self.text_next:
                self.text_next = False
                if isinstance(self.answer.result, dict):
                    self.answer.result["text"] = line.decode()
                continue
            try:
                kind, value = json.loads(line)
            except (ValueError, TypeError):
                continue  # not a frame (nothing else should be on this stream): never fatal
            if kind in ("out", "err") and isinstance(value, str):
                if self.on_output:
                    self.on_output("stdout" if kind == "out" else "stderr", value)
            elif kind == "data" and isinstance(value, str) and self.on_data:
                self.on_data(binascii.a2b_base64(value))
            elif kind == "attempt" and isinstance(value, int) and self.on_attempt:  # the job runs again
                self.on_attempt(value)
            elif kind == "staged" and isinstance(value, str):
                self.answer.staged.append(value)
            elif kind == "event" and isinstance(value, dict):
                self.answer.events.append(value)
            elif kind == "note" and isinstance(value, str):  # grid's word to the user, as it happens
                sys.stderr.write(f"grid: {value}\n")
                sys.stderr.flush()
            elif kind == "result":
                self.answer.result = value
            elif kind == "text":
                self.text_next = True
            elif kind == "error":
                self.answer.error = str(value)
            elif kind == "exit" and isinstance(value, int):
                self.answer.status, self.answer.ended = value, True


def data_frames(data: bytes) -> bytes:
    """Bytes a request carries, as the service reads them (service.Client.read_data)."""
    view = memoryview(data)
    lines = [json.dumps(["data", binascii.b2a_base64(view[at:at + DATA_CHUNK], newline=False).decode()]).encode()
             for at in range(0, len(view), DATA_CHUNK)]
    return b"\n".join([*lines, b'["end", null]', b""])


def exchange(stream: Any, request: bytes, frames: Frames, timeout: float | None) -> None:
    """The request sent on a connected stream (a socket, or an SSH channel to one), its frames read."""
    with contextlib.closing(stream):
        stream.settimeout(timeout)
        try:
            stream.sendall(request)
            while not frames.answer.ended and (data := stream.recv(1 << 20)):
                frames.feed(data)
        except TimeoutError:
            raise GridError(f"the grid service did not answer within {timeout:g} s") from None
        except OSError as exc:
            raise ChannelLost(f"the connection to the grid service broke: {exc}") from None
