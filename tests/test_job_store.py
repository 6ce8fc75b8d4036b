"""The job store on the head's disk (grid_core/queue/store.py): what is committed survives a new
store on the same directory (a restarted service, a rebooted head), output resumes exactly, and
retention keeps what it promises."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from grid_core.queue import store as store_module
from grid_core.queue.store import JobStore
from grid_core.types import Attempt, JobRecord


def job(job_id: str, state: str = "queued", **fields: object) -> JobRecord:
    return JobRecord(id=job_id, node=None, argv=("true",), state=state, submitted=1.0, **fields)  # type: ignore[arg-type]


def test_a_committed_job_and_its_output_survive_a_new_store_on_the_directory(tmp_path: Path) -> None:
    first = JobStore(str(tmp_path / "s"))
    added = first.add([(job("a"), {"env": {"K": "v"}}), (job("b", priority=5), {})])
    assert [j.seq for j in added] == [1, 2]
    first.update("a", state="running", node="w1")
    first.append("a", [("stdout", "one\n"), ("stderr", "two\n")])
    first.update("b", state="succeeded", exit_status=0, ended=5.0)
    first.close()  # as after kill -9: nothing more than what each call committed

    again = JobStore(str(tmp_path / "s"))
    assert set(again.active) == {"a"} and again.active["a"].node == "w1"
    assert again.get("b") == attrs.evolve(added[1], state="succeeded", exit_status=0, ended=5.0)
    assert again.spec("a") == {"env": {"K": "v"}}
    assert again.read("a")[:2] == ([("stdout", "one\n"), ("stderr", "two\n")], (4, 4))
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "s" / "jobs.db").stat().st_mode & 0o777 == 0o600


def test_a_finished_job_takes_no_more_reports(tmp_path: Path) -> None:
    """A runner's late report of a job already ended (stopped meanwhile) changes nothing."""
    s = JobStore(str(tmp_path))
    s.add([(job("a"), {})])
    s.update("a", state="stopped", ended=2.0)
    assert s.update("a", state="running") is None
    s.append("a", [("stdout", "late\n")])
    assert s.get("a").state == "stopped" and s.read("a")[0] == []  # type: ignore[union-attr]


def test_a_reader_resumes_each_stream_where_it_stood(tmp_path: Path) -> None:
    """A client that had part of the output (a chunk of one stream, or part of a chunk) gets
    exactly the rest, in order, from any point, also from a store opened anew."""
    s = JobStore(str(tmp_path))
    s.add([(job("j"), {})])
    chunks = [("stdout", "1\n2\n"), ("stderr", "warn\n"), ("stdout", "3\n"), ("stderr", "é\n"), ("stdout", "4\n")]
    s.append("j", chunks[:2])
    s.append("j", chunks[2:])
    whole = "".join(f"{stream}:{text}" for stream, text in chunks)
    for reader in (s, JobStore(str(tmp_path))):
        for cut in range(len(chunks) + 1):  # having read whole chunks
            had = [sum(len(t) for n, t in chunks[:cut] if n == name) for name in ("stdout", "stderr")]
            rest, stood, info = reader.read("j", had)
            assert info is not None and stood == (8, 7)
            assert "".join(f"{stream}:{text}" for stream, text in chunks[:cut] + rest) == whole
        rest, _, _ = reader.read("j", (1, 0))  # part of the first chunk
        assert rest[0] == ("stdout", "\n2\n") and len(rest) == len(chunks)
        assert reader.read("j", (8, 7))[0] == [] and reader.read("nobody", (0, 0))[2] is None


def test_output_beyond_the_limit_is_dropped_from_the_front_and_offsets_still_count_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAX_OUTPUT_CHARS", 4)
    s = JobStore(str(tmp_path))
    s.add([(job("j"), {})])
    for piece in (("stdout", "ab"), ("stderr", "cd"), ("stdout", "ef"), ("stderr", "gh"), ("stdout", "ij")):
        s.append("j", [piece])
    assert s.read("j", (0, 0))[:2] == ([("stderr", "gh"), ("stdout", "ij")], (6, 4))
    assert s.read("j", (5, 4))[0] == [("stdout", "j")]
    # The file was written anew past twice the limit: a new store reads the same, offsets kept.
    assert os.path.getsize(tmp_path / "output" / "j") < 60
    assert JobStore(str(tmp_path)).read("j", (0, 0))[:2] == ([("stderr", "gh"), ("stdout", "ij")], (6, 4))


def test_a_line_cut_short_by_a_crash_ends_what_was_kept(tmp_path: Path) -> None:
    s = JobStore(str(tmp_path))
    s.add([(job("j"), {})])
    s.append("j", [("stdout", "kept\n")])
    with open(tmp_path / "output" / "j", "a") as f:
        f.write('[0, "half')
    assert JobStore(str(tmp_path)).read("j")[0] == [("stdout", "kept\n")]


def test_retention_keeps_the_newest_records_or_the_young_ones_and_bounds_output(tmp_path: Path) -> None:
    s = JobStore(str(tmp_path))
    s.add([(job(f"j{i}"), {}) for i in range(6)])
    for i in range(6):
        s.append(f"j{i}", [("stdout", "x" * 100)])
        s.update(f"j{i}", state="succeeded", ended=float(i * 100))
    s.add([(job("waiting"), {})])
    # Keep the newest 2, or those that ended at 300 or later: j3, j4, j5 stay; j0..j2 go.
    assert s.prune(keep_records=2, keep_seconds=200, keep_output_bytes=10**6, now=500.0) == 3
    assert [j.id for j in s.finished()] == ["j3", "j4", "j5"] and s.get("waiting") is not None
    # Output beyond 250 bytes in all: the oldest finished job's goes first, its record stays.
    s.prune(keep_records=10, keep_seconds=10**6, keep_output_bytes=250, now=500.0)
    assert s.read("j3")[0] == [] and s.read("j4")[0] and s.read("j5")[0] and s.get("j3") is not None
    assert [j.id for j in s.finished(newest=1)] == ["j5"]


def test_each_attempt_keeps_its_own_output(tmp_path: Path) -> None:
    """A job run again after a lost attempt: its output starts anew, the lost attempt's is kept
    beside it, and both go when the record is pruned."""
    s = JobStore(str(tmp_path))
    s.add([(job("a", state="running"), {})])
    s.append("a", [("stdout", "first try\n")])
    s.end_attempt("a", 1)
    s.update("a", attempts=(Attempt(number=1, node="w1", dispatched=1.0, state="lost"),
                            Attempt(number=2, node="w2", dispatched=2.0)))
    s.append("a", [("stdout", "second\n")])
    again = JobStore(str(tmp_path))
    assert again.read("a")[0] == [("stdout", "second\n")]
    assert again.read("a", attempt=1)[0] == [("stdout", "first try\n")]
    assert again.read("a", attempt=2)[0] == [("stdout", "second\n")]
    again.update("a", state="succeeded", ended=2.0)
    assert again.prune(keep_records=1, keep_seconds=0, keep_output_bytes=0, now=10.0) == 0
    assert os.listdir(tmp_path / "output") == []  # over the output budget: both attempts' files went


def test_a_late_word_changes_a_finished_record(tmp_path: Path) -> None:
    s = JobStore(str(tmp_path))
    s.add([(job("a"), {})])
    s.update("a", state="lost", ended=2.0, attempts=(Attempt(number=1, node="w1", dispatched=1.0, state="lost"),))
    s.amend("a", attempts=(Attempt(number=1, node="w1", dispatched=1.0, state="lost", reason="fenced at 10:00"),))
    assert JobStore(str(tmp_path)).get("a").attempts[0].reason == "fenced at 10:00"  # type: ignore[union-attr]


def test_finished_rows_are_kept_texts_in_order_and_uniform_says_whether_all_are_job_records(tmp_path: Path) -> None:
    """A listing splices the kept texts in as they are (job_queue.jobs_text): that is sound only
    while every record has JobRecord's fields, which `uniform` tells."""
    s = JobStore(str(tmp_path))
    s.add([(job("a"), {}), (job("b"), {}), (job("c"), {})])
    for name in ("c", "a"):
        s.update(name, state="succeeded", exit_status=0, ended=3.0)
    rows = s.finished_rows()
    assert [(r.seq, r.id) for r in rows] == [(1, "a"), (3, "c")]
    assert store_module._load(rows[0].text) == s.get("a") and s.uniform()
    older = JobStore(str(tmp_path / "older"))
    older.add([(job("d"), {})])
    older.db.execute("UPDATE jobs SET record = json_remove(record, '$.attempts')")  # as a grid before attempts kept it
    assert not JobStore(str(tmp_path / "older")).uniform()
