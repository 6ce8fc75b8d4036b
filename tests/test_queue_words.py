"""The queue's words as Slurm spells them (grid_core/queue/words.py): what each means, and any text
gives a value or one ValueError with the message users see."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grid_core.queue.words import parse_after, parse_array, parse_duration, parse_priority


def test_the_words_mean_what_slurm_users_expect() -> None:
    assert parse_array("0-99%8") == (tuple(range(100)), 8)
    assert parse_array("1,5,9") == ((1, 5, 9), 0)
    assert parse_array("0-98:2")[0] == tuple(range(0, 99, 2))
    assert parse_array("3, 1-2") == ((1, 2, 3), 0)
    assert [parse_duration(t) for t in ("90s", "30m", "2h", "1d", "45", "1:30", "1:00:05", "1-00:00")] == \
        [90, 1800, 7200, 86400, 45, 5400, 3605, 86400]
    assert [parse_priority(t) for t in ("low", "normal", "HIGH", "7", "-3")] == [-10, 0, 10, 7, -3]
    assert parse_after("3f2a9c1e,3f2a9c1e.7, 3f2a9c1e") == ("3f2a9c1e", "3f2a9c1e.7")


@pytest.mark.parametrize(("parse", "text", "message"), [
    (parse_array, "5-1", "runs upward"),
    (parse_array, "0-9%0", "at least 1"),
    (parse_array, "0-999999", "more than 100000 members"),
    (parse_array, "a-b", "is not an array"),
    (parse_duration, "0s", "out of range"),
    (parse_duration, "2 weeks", "is not a time"),
    (parse_duration, "1:75", "run to 59"),
    (parse_priority, "urgent", "low, normal, high"),
    (parse_priority, "99999999999", "out of range"),
    (parse_after, "", "not a list of job ids"),
    (parse_after, "../x", "not a list of job ids"),
])
def test_bad_words_get_one_clear_message(parse: Callable[[str], Any], text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


@given(st.text(max_size=40))
def test_any_text_gives_a_value_or_a_value_error(text: str) -> None:
    for parse in (parse_array, parse_duration, parse_priority, parse_after):
        try:
            parse(text)
        except ValueError as exc:
            assert str(exc) and "\n" not in str(exc).strip()
