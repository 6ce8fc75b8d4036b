"""The grid service's wire protocol against hostile input, over a real socket pair, without Ray:
what the service reads from a client (service.Client) and what the CLI reads back (channel.Frames)."""

from __future__ import annotations

import functools
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grid_plugin_ray_backend.channel import STAGE_MIN, Frames, data_frames
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


@given(st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=30)), max_size=30),
       st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=10))
def test_a_listing_sent_as_a_raw_line_arrives_as_the_result_s_text_wherever_it_is_cut(
        records: list[dict[str, str]], cuts: list[int]) -> None:
    """Client.result_text sends JSON text after its result frame, unescaped; Frames puts it back in
    the result as "text", whatever the chunks. Text with a newline goes inside the frame instead."""
    for text in (json.dumps(records), json.dumps(records, indent=1)):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            Client(theirs).result_text({"fields": ["a"]}, text)
            theirs.sendall(b'["exit", 0]\n')
            theirs.shutdown(socket.SHUT_WR)
            sent = b"".join(iter(functools.partial(ours.recv, 65536), b""))
        frames = Frames(None)
        at = 0
        for cut in [*cuts, len(sent)]:
            frames.feed(sent[at:at + cut])
            at += cut
        frames.feed(sent[at:])
        assert frames.answer.result == {"fields": ["a"], "text": text} and frames.answer.ended
        assert (b'["text", null]' in sent) == ("\n" not in text)


def test_a_big_answer_for_another_machine_is_staged_in_a_private_file(tmp_path: Path) -> None:
    """Asked by a client on another machine (which copies it with SFTP), data of STAGE_MIN bytes or
    more is a 0600 file in a 0700 directory, named by a `staged` frame; stale ones are removed."""
    staging = tmp_path / "transfers"
    staging.mkdir(mode=0o700)
    stale = staging / "get-left-behind"
    stale.write_bytes(b"x")
    os.utime(stale, (0, 0))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        client = Client(theirs, staging=str(staging))
        small, big = b"s" * 10, os.urandom(STAGE_MIN)
        client.send_data(small)
        client.send_data(big)
        ours.settimeout(5)
        frames = Frames(None, lambda data: got.append(data))
        got: list[bytes] = []
        while len(frames.answer.staged) < 1:
            frames.feed(ours.recv(1 << 16))
    assert got == [small]  # small answers stay in the stream
    [path] = frames.answer.staged
    assert Path(path).read_bytes() == big and Path(path).parent == staging
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and stat.S_IMODE(os.stat(staging).st_mode) == 0o700
    assert not stale.exists()


def test_a_request_s_staged_data_is_read_once_and_only_from_the_staging_directory(tmp_path: Path) -> None:
    staging, elsewhere = tmp_path / "transfers", tmp_path / "secret"
    staging.mkdir(mode=0o700)
    elsewhere.write_bytes(b"not for the service to read or remove")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        client = Client(theirs, staging=str(staging))
        upload = staging / "put-1"
        upload.write_bytes(b"x" * STAGE_MIN)
        client.staged_data = str(upload)
        assert client.read_data() == b"x" * STAGE_MIN and not upload.exists()
        for path, message in ((elsewhere, "staging directory"), (staging / ".." / "secret", "staging directory"),
                              (staging / "missing", "cannot read")):
            client.staged_data = str(path)
            with pytest.raises(ServiceError, match=message):
                client.read_data()
    assert elsewhere.exists()


def test_the_engine_check_before_asking_the_service_answers_for_addresses_and_names() -> None:
    """gcs.port_open: an address is connected to without a name lookup; a name is looked up."""
    from grid_plugin_ray_backend.gcs import port_open

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert port_open(f"127.0.0.1:{port}") and port_open(f"localhost:{port}")
    assert not port_open(f"127.0.0.1:{port}")  # closed now
    for refused in ("[::1]:1", "no-such-host.invalid:6379", "127.0.0.1:port", "nothing"):
        assert not port_open(refused, timeout=2)


def test_a_node_s_resources_leave_out_the_ones_ray_makes_for_each_reservation() -> None:
    """A job in a spare runner, or a boost, is a placement group: Ray adds resources named after
    it, while what it holds shows as used in the resource itself."""
    from grid_plugin_ray_backend.gcs import RayNode, resource_usage

    group = "3f2a9c0d8e7b6a5f4e3d2c1b0a090807"
    total = {"CPU": 2.0, "memory": 2e9, "node:10.0.0.1": 1.0, "grid-node-w1": 1.0, f"CPU_group_{group}": 1.0,
             f"CPU_group_0_{group}": 1.0, f"bundle_group_{group}": 1000.0, f"bundle_group_0_{group}": 1000.0,
             f"grid-node-w1_group_0_{group}": 0.001, "gpu_group_a": 1.0}
    node = RayNode(node_id="n1", grid_name="w1", address="10.0.0.1", alive=True, is_head=False, started_ms=0,
                   total=total, available={"CPU": 1.0, "memory": 2e9, "gpu_group_a": 1.0})
    found = resource_usage(node)
    assert set(found) == {"CPU", "memory", "gpu_group_a"}  # a resource of the user's own that says "group"
    assert (found["CPU"].total, found["CPU"].used) == (2.0, 1.0)
