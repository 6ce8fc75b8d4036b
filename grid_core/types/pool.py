"""The memory pool's record of an entry (`grid memory ls`)."""

from __future__ import annotations

from grid_core.record import record

__all__ = ("PoolEntry",)


@record(kw_only=True)
class PoolEntry:
    """A memory-pool entry: its key, node, size in bytes, times, `ok` or `lost` (its node left), and
    who put it (a CLI's user, as the grid service knows them; "" from a Python program)."""

    key: str
    node: str
    size: int
    created: float
    last_read: float
    state: str = "ok"
    owner: str = ""
