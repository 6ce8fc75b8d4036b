"""What the CLI checks before asking the cluster, without importing Ray: keys and the pool's error."""

from __future__ import annotations

import re

from grid_core.errors import GridError

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$")


class PoolError(GridError):
    """A pool operation that cannot be done; the message says why."""


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.match(key):
        raise PoolError(
            f"invalid key {key!r}: 1-255 characters, starting with a letter or digit, then letters, digits and ._:/@+-"
        )
    return key
