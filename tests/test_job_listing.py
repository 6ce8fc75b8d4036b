"""What `grid jobs list` shows (grid_core/queue/listing.py, the CLI's rows), from records made with
the real types: arrays as one row, the waiting jobs after the first few as a count."""

from __future__ import annotations

import json

import attrs
import pytest

from grid_core.cli.run import _print_jobs_json, _rows
from grid_core.queue.listing import listing
from grid_core.types import JobListing, JobRecord, JobsText, wire


def job(seq: int, state: str = "queued", **fields: object) -> dict[str, object]:
    fields = {"id": f"j{seq}", **fields}
    record = JobRecord(node=None, argv=("x",), state=state, submitted=float(seq), seq=seq,
                       **fields)  # type: ignore[arg-type]
    return wire().unstructure(record)  # type: ignore[no-any-return]


def test_an_array_is_one_row_and_the_waiting_jobs_after_the_first_few_one_count() -> None:
    jobs = [job(1, "running"), *(job(10 + i, array_id="a", array_index=i, id=f"a.{i}",
                                     state="succeeded" if i < 2 else "queued") for i in range(5)),
            *(job(20 + i, position=5 - i, waiting="resources") for i in range(5))]
    shown = wire().structure(listing(jobs, shown=2), JobListing)
    assert [j.id for j in shown.jobs] == ["j1", "j23", "j24"]  # the first two in line: positions 2 and 1
    assert shown.more_queued == 3 and len(shown.arrays) == 1
    assert (shown.arrays[0].size, dict(shown.arrays[0].states)) == (5, {"succeeded": 2, "queued": 3})
    rows = list(_rows(shown))
    assert [r[0] for r in rows] == ["j1", "a", "j23", "j24", "..."]  # in submission order, the count last
    assert rows[1][1:3] == ("array of 5", "2 succeeded, 3 queued") and rows[1][7] == "-"  # not ended yet
    every = wire().structure(listing(jobs, shown=2, expand=True), JobListing)
    assert len(every.jobs) == 11 and every.arrays == () and every.more_queued == 0


def test_jobs_json_is_printed_as_the_service_wrote_it_only_where_its_records_are_job_records(
        capsys: pytest.CaptureFixture[str]) -> None:
    """`grid jobs list --json` into a pipe: the service's text as it came when every record has
    JobRecord's keys (the service says so in `fields`), else records made anew, with JobRecord's
    defaults for what an older grid did not keep."""
    fields = tuple(f.name for f in attrs.fields(JobRecord))
    sent = json.dumps([job(1), job(2, "running")])
    _print_jobs_json(JobsText(fields=fields, text=sent))
    assert capsys.readouterr().out == sent + "\n"
    older = [{k: v for k, v in job(3).items() if k not in ("held", "attempts")}]
    _print_jobs_json(JobsText(fields=(), text=json.dumps(older)))
    printed = json.loads(capsys.readouterr().out)
    assert printed == [job(3)] and printed[0]["held"] is False and printed[0]["attempts"] == []
