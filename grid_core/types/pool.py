"""The memory pool's record of an entry (`grid memory ls`)."""

from __future__ import annotations

from grid_core.record import record

__all__ = ("PoolEntry",)


@record(kw_only=True)
class PoolEntry:
    """A memory-pool entry: its key, node, size in bytes, times, and `ok` or `lost` (its node left)."""

    key: str
    node: str
    size: int
    created: float
    last_read: float
    state: str = "ok"
