"""The backend's requests by a kept shortcut (grid_core/shortcut.py): channel.py's, sent by the
shortcut's route, with neither the config, a transport nor the rest of the backend loaded.
Backend.shortcut makes the shortcut; the job requests are built here once, for both paths."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from grid_core.errors import GridError
from grid_core.shortcut import Unusable, connect
from grid_plugin_ray_backend.frames import CALL_TIMEOUT, ChannelLost, Frames, exchange

if TYPE_CHECKING:
    from grid_core.types import ControllerStatus, JobSpec, JobsText, Shortcut, StatusAnswer, StatusBasis

Call = Callable[[str, dict[str, Any]], Any]  # a request's op and params -> its answer's result
R = TypeVar("R")  # a record the service answers with


def jobs(call: Call, *, everything: bool = False, user: str | None = None, mine: bool = False) -> list[dict[str, Any]]:
    params = {"all": everything or None, "user": user, "mine": mine or None}
    return list(call("jobs", {k: v for k, v in params.items() if v is not None}) or [])


def jobs_text(call: Call, *, everything: bool = False, user: str | None = None, mine: bool = False) -> JobsText:
    from grid_core.types import JobsText, wire

    params = {"all": everything or None, "user": user, "mine": mine or None, "text": True, "raw": True}
    try:
        answer = call("jobs", {k: v for k, v in params.items() if v is not None})
    except GridError as exc:
        if not str(exc).startswith("bad request"):
            raise
        # A service started before JobsText: its records, as text.
        answer = {"fields": [], "text": json.dumps(jobs(call, everything=everything, user=user, mine=mine))}
    return wire().structure(answer, JobsText)  # type: ignore[no-any-return]


def listing(call: Call, *, shown: int, expand: bool = False, everything: bool = False, user: str | None = None,
            mine: bool = False) -> dict[str, Any]:
    params = {"all": everything or None, "user": user, "mine": mine or None, "shown": shown, "expand": expand or None}
    return dict(call("jobs", {k: v for k, v in params.items() if v is not None}) or {})


def control(call: Call, action: str, params: dict[str, Any], answer: type[R]) -> R:
    """Ask the offload controller in the grid service; its answer, read as the record `answer`."""
    from grid_core.types import wire

    return wire().structure(call("offload", {"action": action, **params}), answer)  # type: ignore[no-any-return]


class Client:
    """Backend.submit (detached), .jobs_text, .listing and .offload_status, `cluster status` as the
    service alone answers it, and a plugin's service op (api.request), by the shortcut
    (grid_core.types.ShortcutClient). A refusal is a GridError; a connection that breaks before
    the answer is Unusable: the usual path asks again (a submission under the same job id, which
    the service queues once)."""

    def __init__(self, shortcut: Shortcut) -> None:
        self.shortcut = shortcut

    def submit(self, spec: JobSpec) -> None:
        from grid_core.types import wire

        self._call("run", {"spec": wire().unstructure(spec), "detach": True})

    def jobs_text(self, **options: Any) -> JobsText:
        return jobs_text(self._call, **options)

    def listing(self, **options: Any) -> dict[str, Any]:
        return listing(self._call, **options)

    def offload_status(self) -> ControllerStatus:
        from grid_core.types import ControllerStatus

        return control(self._call, "status", {}, ControllerStatus)

    def cluster_status(self, basis: StatusBasis) -> StatusAnswer:
        from grid_core.types import StatusAnswer, wire

        try:
            answer = self._call("cluster_status", {"basis": wire().unstructure(basis)})
        except GridError as exc:  # a service started before this request: the usual path asks it
            if not str(exc).startswith("unknown request"):
                raise
            answer = {}
        return wire().structure(answer, StatusAnswer)  # type: ignore[no-any-return]

    def service_op(self, op: str, params: dict[str, Any]) -> Any:
        return self._call(op, params)

    def _call(self, op: str, params: dict[str, Any]) -> Any:
        body = {"op": op, "params": params, **self.shortcut.payload}
        frames = Frames(None)  # notes (a job's place in line) go to stderr as they come
        try:
            exchange(connect(self.shortcut.route), (json.dumps(body) + "\n").encode(), frames, CALL_TIMEOUT)
        except ChannelLost as exc:
            raise Unusable(str(exc)) from None
        if frames.answer.error is not None:
            raise GridError(frames.answer.error)
        if not frames.answer.ended:
            raise Unusable("the grid service ended the connection before answering")
        return frames.answer.result
