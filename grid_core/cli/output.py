"""Everything grid prints through rich: the two consoles, tables, styled text and one clock format.

Text that users or other users control (job arguments, process command lines, hold reasons, host
names such as `[gpu1]:2222`) must never be read as rich markup: `[/]` in a job's argv would raise
MarkupError, and `[gpu1]` would vanish. So cells and messages become `rich.text.Text` here, which
rich never parses; colour comes from a style, never from markup around the value.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

Cell = Any  # a str (shown literally), a rich renderable (a styled Text, a bar), or None ("-")


@functools.cache
def console() -> Console:
    """Results on stdout; pipes get a wide console so that tables are not cut for scripts and logs."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


@functools.cache
def err_console() -> Console:
    """Diagnostics and progress on stderr."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def styled(value: object, style: str = "") -> Text:
    """`value` as literal text in a style (e.g. "green", "bold red", "dim")."""
    from rich.text import Text

    return Text(str(value), style=style)


def join(*parts: str | tuple[object, str]) -> Text:
    """Literal text from pieces, each a str or (value, style): join(("held", "red"), " (disk swap)")."""
    from rich.text import Text

    return Text.assemble(*((str(p[0]), p[1]) if isinstance(p, tuple) else p for p in parts))


def table(columns: Sequence[str], rows: Iterable[Sequence[Cell]], title: str | None = None) -> Table:
    """A borderless table with a bold header; every str cell (and the title) is shown literally."""
    from rich.table import Table

    out = Table(title=styled(title) if title else None, box=None, header_style="bold", title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(_cell(value) for value in row))
    return out


def _cell(value: Cell) -> Any:
    from rich.protocol import is_renderable
    from rich.text import Text

    if value is None:
        return Text("-")
    return value if is_renderable(value) and not isinstance(value, str) else Text(str(value))


def say(*parts: str | tuple[object, str], err: bool = False) -> None:
    """Print one line of literal text (pieces as in join) on stdout, or stderr with err=True."""
    (err_console() if err else console()).print(join(*parts))


def clock(stamp: float | str | None) -> str:
    """A wall-clock time of day (HH:MM:SS) for a Unix timestamp; "-" when there is none."""
    try:
        return time.strftime("%H:%M:%S", time.localtime(float(stamp))) if stamp else "-"
    except (TypeError, ValueError, OverflowError, OSError):  # a record from elsewhere with junk in it
        return "-"
