"""Everything grid prints through rich: the two consoles, tables, styled text and one clock format.

Text that users or other users control (job arguments, process command lines, hold reasons, host
names such as `[gpu1]:2222`) must never be read as rich markup: `[/]` in a job's argv would raise
MarkupError, and `[gpu1]` would vanish. So cells and messages become `rich.text.Text` here, which
rich never parses; colour comes from a style, never from markup around the value.

print_table skips rich (a fifth of a short command's start-up) where rich would print plain text
anyway: stdout not a terminal, no colour forced, every cell printable ASCII on one line and the
table within the pipe console's width. It then writes the very characters rich would.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

Cell = Any  # a str (shown literally), Pieces, a rich renderable (a styled Text, a bar), or None ("-")
PIPE_WIDTH = 200  # the stdout console's width when stdout is not a terminal


@functools.cache
def console() -> Console:
    """Results on stdout; pipes get a wide console so that tables are not cut for scripts and logs."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)


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


class Pieces:
    """join(*parts) built only when rich renders it: a cell that print_table can show without rich."""

    __slots__ = ("parts",)

    def __init__(self, *parts: str | tuple[object, str]) -> None:
        self.parts = parts

    @property
    def plain(self) -> str:
        return "".join(str(p[0]) if isinstance(p, tuple) else p for p in self.parts)

    def __rich__(self) -> Text:
        return join(*self.parts)


def table(columns: Sequence[str], rows: Iterable[Sequence[Cell]], title: str | None = None) -> Table:
    """A borderless table with a bold header; every str cell (and the title) is shown literally."""
    from rich.table import Table

    out = Table(title=styled(title) if title else None, box=None, header_style="bold", title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(_cell(value) for value in row))
    return out


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Cell]], title: str | None = None) -> None:
    """Print table(columns, rows, title) on stdout, without importing rich where it would add nothing."""
    cells = [list(row) for row in rows]
    text = _plain_table(columns, cells, title) if _plain_stdout() else None
    if text is None:
        console().print(table(columns, cells, title))
    else:
        sys.stdout.write(text)


def _plain_stdout() -> bool:
    """Whether the stdout console would print no styles at a fixed width (rich's own tests)."""
    forced = any(name in os.environ for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "JUPYTER_COLUMNS"))
    return not forced and "IPython" not in sys.modules and not sys.stdout.isatty()


def _plain_text(value: Cell) -> str | None:
    """A cell as the text rich would show, where that is printable ASCII on one line; else None."""
    if value is None:
        return "-"
    if isinstance(value, Pieces):
        text = value.plain
    elif type(value) in (str, int, float):
        text = str(value)
    else:  # a renderable: only rich can say what it shows
        return None
    return text if text.isascii() and text.isprintable() else None


def _plain_table(columns: Sequence[str], rows: list[list[Cell]], title: str | None = None) -> str | None:
    """What console().print(table(...)) writes to a pipe, or None where only rich can say (a wide
    table rich would wrap, a cell or title that is not plain ASCII text)."""
    if not columns:
        return None
    lines = [list(columns)]
    for row in rows:
        if len(row) != len(columns):
            return None
        cells = [_plain_text(value) for value in row]
        if None in cells:
            return None
        lines.append(cells)  # type: ignore[arg-type]
    if not all(_plain_text(c) == c for c in columns):
        return None
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    across = sum(widths) + 2 * len(widths)
    if across > PIPE_WIDTH or (title is not None and (_plain_text(title) != title or len(title) > across)):
        return None
    heading = f"{title.ljust(across)}\n" if title else ""
    return heading + "".join("".join(f" {cell.ljust(width)} " for cell, width in zip(line, widths, strict=True)) + "\n"
                   for line in lines)


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
