"""Offload settings as users type them (`--threshold cpu=80`) and as policies receive them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs

from grid_core.config import METRICS, OffloadSettings
from grid_core.errors import GridError


def parse_thresholds(values: Sequence[str]) -> dict[str, float]:
    """`70` (memory, as in the seed) or `cpu=80`, `memory=65`, `gpu=90`, each a percentage."""
    marks: dict[str, float] = {}
    for value in values:
        metric, sep, number = value.partition("=")
        if not sep:
            metric, number = "memory", value
        metric = metric.strip().lower()
        if metric not in METRICS:
            raise GridError(f"--threshold {value!r}: unknown metric {metric!r} (use cpu, memory or gpu)")
        try:
            percent = float(number)
        except ValueError:
            raise GridError(f"--threshold {value!r}: {number.strip()!r} is not a number") from None
        if not math.isfinite(percent) or not 0 < percent <= 100:
            raise GridError(f"--threshold {value!r}: a percentage must be above 0 and at most 100")
        if metric in marks:
            raise GridError(f"--threshold {value!r}: {metric} is given twice")
        marks[metric] = percent
    return marks


def policy_settings(offload: OffloadSettings) -> dict[str, Any]:
    """What a policy's factory receives: marks, window and cooldown as plain data."""
    return {
        "high": attrs.asdict(offload.high),
        "low": attrs.asdict(offload.low),
        "window": offload.window,
        "cooldown_seconds": offload.cooldown_seconds,
        "interval_seconds": offload.interval_seconds,
    }
