"""The words lab users type for the queue, as Slurm spells them: `--array 0-99%8`, `--time 2h`,
`--priority high`, `--after ID,ID`. Each parser raises ValueError with the message a user sees."""

from __future__ import annotations

import math
import re

PRIORITIES = {"low": -10, "normal": 0, "high": 10}
MAX_PRIORITY = 1_000_000
MAX_ARRAY = 100_000  # members in one array (Slurm's MaxArraySize is 1001 by default)
MAX_INDEX = 10_000_000
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
CLOCK = re.compile(r"^\s*(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?\s*$")  # Slurm's [D-]HH:MM[:SS]
RANGE = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")
JOB_ID = re.compile(r"^[0-9a-f]{1,32}(?:\.\d+)?$")


def parse_priority(text: str) -> int:
    """`low`, `normal`, `high` or an integer (higher runs first)."""
    word = text.strip().lower()
    if word in PRIORITIES:
        return PRIORITIES[word]
    try:
        value = int(word)
    except ValueError:
        raise ValueError(f"{text!r} is not a priority: give low, normal, high or an integer") from None
    if abs(value) > MAX_PRIORITY:
        raise ValueError(f"priority {value} is out of range (-{MAX_PRIORITY} to {MAX_PRIORITY})")
    return value


def parse_duration(text: str) -> float:
    """Seconds from `90s`, `30m`, `2h`, `1h30m`, `1d`, a plain number of seconds, or Slurm's
    `[D-]HH:MM[:SS]`: `grid run --time` and `grid boost request --duration` alike."""
    word = text.strip().lower()
    if clock := CLOCK.match(word):
        days, first, second, third = (int(g) if g else 0 for g in clock.groups())
        hours, minutes, secs = (first, second, third) if clock.group(4) else (first, second, 0)
        if minutes >= 60 or secs >= 60:
            raise ValueError(f"{text!r} is not a time: minutes and seconds run to 59")
        seconds = float(((days * 24 + hours) * 60 + minutes) * 60 + secs)
    else:
        try:
            seconds = float(word)
        except ValueError:
            parts = DURATION_PART.findall(word)
            if not parts or "".join(n + u for n, u in parts) != word:
                raise ValueError(f"{text!r} is not a time such as 90s, 30m, 2h, 1h30m or 1-12:00:00") from None
            seconds = sum(float(n) * DURATION_UNITS[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is out of range: a time is more than 0 s")
    return seconds


def parse_array(text: str) -> tuple[tuple[int, ...], int]:
    """The indices and the cap on members running at once (0: none) of `0-99%8`, `1,5,9` or `0-98:2`."""
    body, _, cap_text = text.strip().partition("%")
    cap = 0
    if cap_text:
        if not cap_text.isdigit() or int(cap_text) < 1:
            raise ValueError(f"{text!r}: the cap after % is a whole number of at least 1, as in 0-99%8")
        cap = int(cap_text)
    indices: set[int] = set()
    for part in body.split(","):
        match = RANGE.match(part.strip())
        if not match:
            raise ValueError(f"{text!r} is not an array: give indices such as 0-99%8, 1,5,9 or 0-98:2")
        first, last, step = int(match.group(1)), int(match.group(2) or match.group(1)), int(match.group(3) or 1)
        if last < first or step < 1:
            raise ValueError(f"{part.strip()!r}: a range runs upward, with a step of at least 1")
        if last > MAX_INDEX:
            raise ValueError(f"{part.strip()!r}: an index is at most {MAX_INDEX}")
        if len(indices) + (last - first) // step + 1 > MAX_ARRAY:
            raise ValueError(f"{text!r} has more than {MAX_ARRAY} members")
        indices.update(range(first, last + 1, step))
    return tuple(sorted(indices)), cap


def parse_after(text: str) -> tuple[str, ...]:
    """Job ids (an array's id, or one member's `ID.7`), comma-separated."""
    ids = tuple(dict.fromkeys(i.strip() for i in text.split(",") if i.strip()))
    bad = [i for i in ids if not JOB_ID.match(i)]
    if not ids or bad:
        raise ValueError(f"{text!r} is not a list of job ids such as 3f2a9c1e or 3f2a9c1e.7")
    return ids
