"""The grid service's wire protocol against hostile input, over a real socket pair, without Ray:
what the service reads from a client (service.Client) and what the CLI reads back (channel.Frames)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grid_plugin_ray_backend.channel import Frames, data_frames
from grid_plugin_ray_backend.service import Client, ServiceError


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, Client]]:
    ours, theirs = socket.socketpair()
    yield ours, Client(theirs)
    ours.close()
    theirs.close()


@pytest.mark.parametrize(("sent", "message"), [
    (b"not json\n", "not JSON"),
    (b"[1, 2]\n", 'a request is {"op"'),
    (b'{"op": 3}\n', 'a request is {"op"'),
    (b'{"op": "jobs", "params": [1]}\n', 'a request is {"op"'),
    (b'{"op": "jobs"', "ended before its newline"),
])
def test_a_bad_request_is_refused_with_the_reason(pair: tuple[socket.socket, Client], sent: bytes,
                                                  message: str) -> None:
    ours, client = pair
    ours.sendall(sent)
    ours.shutdown(socket.SHUT_WR)
    with pytest.raises(ServiceError, match=message):
        client.read_request()


def test_data_after_the_request_arrives_whole_and_bad_data_is_refused(pair: tuple[socket.socket, Client]) -> None:
    ours, client = pair
    blob = bytes(range(256)) * 40_000  # 10 MB: more than one data frame
    sender = threading.Thread(target=ours.sendall, args=(b'{"op": "memory", "params": {}}\n' + data_frames(blob),))
    sender.start()  # a socket holds far less than this: the service reads while the CLI sends
    assert client.read_request()["op"] == "memory"
    assert client.read_data() == blob
    sender.join()
    ours.sendall(b'["out", "not data"]\n')
    with pytest.raises(ServiceError, match="not data frames"):
        client.read_data()


@given(st.lists(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)), max_size=20))
def test_the_cli_never_fails_on_what_arrives(chunks: list[bytes]) -> None:
    """Frames split anywhere, and lines that are not frames, never raise; only frames count."""
    frames = Frames(lambda stream, text: None, lambda data: None)
    for chunk in chunks:
        frames.feed(chunk)
    frames.feed(b"\n" + json.dumps(["result", {"ok": True}]).encode() + b"\n" + b'["exit", 0]\n')
    assert frames.answer.result == {"ok": True} and frames.answer.ended and frames.answer.status == 0
