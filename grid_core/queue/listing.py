"""What `grid jobs list` shows, worked out where the jobs are (the service), from their records'
plain data: each job of its own; an array as one row with counts by state (unless `expand`); the
waiting jobs after the first `shown` (by their place in line) as one count. JSON of 1,000 waiting
jobs is 600 KB that the CLI would read and check only to print one line for them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grid_core.types.jobs import ACTIVE


def listing(jobs: Sequence[Mapping[str, Any]], shown: int, expand: bool = False) -> dict[str, Any]:
    """JobListing's plain data from JobRecords' plain data, in submission order."""
    arrays: dict[str, list[Mapping[str, Any]]] = {}
    alone = []
    for job in jobs:
        if job.get("array_id") and not expand:
            arrays.setdefault(str(job["array_id"]), []).append(job)
        else:
            alone.append(job)
    waiting = sorted((j for j in alone if j["state"] == "queued"),
                     key=lambda j: (j.get("position") or 1 << 30, j["seq"]))
    later = set() if expand else {j["id"] for j in waiting[shown:]}
    rows = []
    for members in arrays.values():
        states: dict[str, int] = {}
        for m in members:
            states[m["state"]] = states.get(m["state"], 0) + 1
        busy = any(m["state"] in ACTIVE for m in members)
        rows.append({"first": members[0], "size": len(members), "states": states,
                     "started": min((m["started"] for m in members if m.get("started")), default=None),
                     "ended": None if busy else max((m.get("ended") or 0 for m in members), default=0) or None})
    return {"jobs": [j for j in alone if j["id"] not in later], "arrays": rows, "more_queued": len(later)}
