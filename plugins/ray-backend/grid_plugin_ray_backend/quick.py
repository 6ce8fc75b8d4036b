"""A detached submission by its kept shortcut (grid_core/shortcut.py): channel.py's `run` request,
sent by the shortcut's route, with neither the config, a transport nor the rest of the backend
loaded. Backend.shortcut makes the shortcut."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from grid_core.errors import GridError
from grid_core.shortcut import Unusable, connect
from grid_plugin_ray_backend.frames import CALL_TIMEOUT, ChannelLost, Frames, exchange

if TYPE_CHECKING:
    from grid_core.types import JobSpec, Shortcut


def submit(shortcut: Shortcut, spec: JobSpec) -> None:
    """Queue the job (its notes, such as its place in line, go to stderr as they come). A refusal
    is a GridError; a connection that breaks before the answer is Unusable: the usual path asks
    again under the same job id, which the service queues once."""
    from grid_core.types import wire

    body = {"op": "run", "params": {"spec": wire().unstructure(spec), "detach": True}, **shortcut.payload}
    frames = Frames(None)
    try:
        exchange(connect(shortcut.route), (json.dumps(body) + "\n").encode(), frames, CALL_TIMEOUT)
    except ChannelLost as exc:
        raise Unusable(str(exc)) from None
    if frames.answer.error is not None:
        raise GridError(frames.answer.error)
    if not frames.answer.ended:
        raise Unusable("the grid service ended the connection before answering")
