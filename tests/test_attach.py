"""The CLI's side of following a job over a channel that drops (attach.Follower), with the channel's
call replaced by the test: a silent connection is given up, the next one asks for the output after
what was printed, and what the abandoned one still brings is never printed."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from grid_core.config import embedded_default
from grid_core.errors import GridError
from grid_plugin_ray_backend import attach, channel


class Cluster:
    def __init__(self) -> None:
        self.reconnected: list[str] = []

    def reconnect(self, node: Any) -> None:
        self.reconnected.append(node.name)


def test_a_silent_channel_is_replaced_and_the_output_resumes_exactly(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(attach, "SILENT_SECONDS", 0.3)
    monkeypatch.setattr(attach, "BACKOFF", (0.0,))
    release, asked = threading.Event(), []

    def call(_config: Any, _cluster: Any, op: str, params: dict[str, Any], *, on_output: Any, on_bytes: Any,
             **_: Any) -> channel.Answer:
        asked.append((op, params["since"]))
        on_bytes()
        if len(asked) == 1:  # the first connection: two lines, then silence, then late output
            on_output("stdout", "1\n2\n")
            on_output("stderr", "w\n")
            release.wait(10)
            on_output("stdout", "3\n")  # after it was given up on: never printed
            raise channel.ChannelLost("late")
        on_output("stdout", "3\n4\n")
        return channel.Answer(status=5, ended=True)

    monkeypatch.setattr(channel, "call", call)
    printed: list[tuple[str, str]] = []
    cluster = Cluster()
    follower = attach.Follower(embedded_default(), cluster, "j1", lambda s, t: printed.append((s, t)))  # type: ignore[arg-type]
    assert follower.follow("run", {"spec": {}}) == 5
    release.set()
    assert asked == [("run", [0, 0]), ("run", [4, 2])]
    assert printed == [("stdout", "1\n2\n"), ("stderr", "w\n"), ("stdout", "3\n4\n")]
    assert cluster.reconnected == ["local"]
    err = capsys.readouterr().err
    assert "lost the connection" in err and "job j1 is running" in err and "grid jobs logs j1 --follow" in err
    assert "reconnected" in err


def test_no_answer_at_all_says_the_job_may_not_have_started(monkeypatch: pytest.MonkeyPatch) -> None:
    def call(*_: Any, **__: Any) -> channel.Answer:
        raise channel.ChannelLost("the relay to the grid service on local failed: exit status 255")

    monkeypatch.setattr(channel, "call", call)
    follower = attach.Follower(embedded_default(), Cluster(), "j2", lambda s, t: None)  # type: ignore[arg-type]
    with pytest.raises(GridError, match="whether job j2 started, `grid jobs list` tells"):
        follower.follow("run", {"spec": {}})
