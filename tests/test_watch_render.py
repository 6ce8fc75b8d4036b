"""The watch dashboard drawn headless from a status snapshot: the records the backend returns."""

from __future__ import annotations

import attrs
import cattrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from grid_core.cli.watch import render
from grid_core.types import (
    Boost,
    Check,
    ClusterStatus,
    ControllerStatus,
    EngineNode,
    Event,
    HeldWork,
    Hold,
    JobRecord,
    NodeMetrics,
    NodeState,
    PoolEntry,
    ShellEnv,
)

HOLD = "cpu 93% >= 80% for 2 readings"
STATUS = ControllerStatus(
    cluster="lab", enabled=True, policy="threshold", interval_seconds=2,
    thresholds={"cpu": 80.0, "memory": 70.0, "gpu": 90.0}, low={"cpu": 60.0, "memory": 55.0, "gpu": 70.0},
    held={"desk": Hold("desk", HOLD, manual=False, since=0.0)},
    nodes=(NodeState(name="desk", role="head", cpu_percent=93.0, memory_percent=40.0, hold=HOLD,
                     owner_cpu_percent=71.0, cluster_cpu_percent=22.0, owner_idle_seconds=4.0, step="lowered",
                     lowered=3, work=(HeldWork(pid=41, name="Trainer", kind="actor", action="kept",
                                               reason="an actor: stopping it would lose its state"),)),
           NodeState(name="gpu1", role="worker", cpu_percent=12.0, memory_percent=65.0, gpu_percent=20.0)),
    boosts=(Boost("b1", "desk", "gpu1", "cpu", 2.0, "high", 0.0, None),),
    events=(Event(0.0, "hold", "desk", "cpu 93% >= 80%"),),
)
JOBS = (JobRecord(id="j1", node="gpu1", argv=("python", "train.py"), state="running", submitted=0.0),
        JobRecord(id="j0", node="gpu1", argv=("echo", "old"), state="succeeded", submitted=0.0, exit_status=0))


def screen(status: ControllerStatus | None, jobs: tuple[JobRecord, ...] = ()) -> str:
    console = Console(record=True, width=220, color_system=None)
    console.print(render(status, jobs))
    return console.export_text()


def test_rows_states_boosts_jobs_and_events_appear() -> None:
    text = screen(STATUS, JOBS)
    desk = next(line for line in text.splitlines() if line.strip().startswith("desk"))
    assert "93%" in desk and f"lowered 3 ({HOLD})" in desk
    assert "71% / 22%" in desk and "4 s" in desk  # the owner's load beside the cluster's; presence
    gpu1 = next(line for line in text.splitlines() if line.strip().startswith("gpu1"))
    assert "free" in gpu1 and "65%" in gpu1
    assert "auto on" in text and "b1" in text and "python train.py" in text and "last events" in text
    assert "j1" in text and "echo old" not in text  # only running jobs
    work = next(line for line in text.splitlines() if "Trainer" in line)
    assert "41" in work and "kept" in work and "an actor: stopping it would lose its state" in work


def test_the_queue_s_length_and_its_first_waiting_jobs_appear() -> None:
    waiting = tuple(JobRecord(id=f"q{i}", node=None, argv=("python", f"sweep{i}.py"), state="queued", submitted=1.0,
                              seq=10 - i, waiting="resources", position=i + 1, reason="no node has 1 CPU free now")
                    for i in range(7))
    text = screen(STATUS, (*JOBS, *waiting))
    assert "queue: 7 waiting" in text and "no node has 1 CPU free now" in text
    assert "sweep0.py" in text and "sweep4.py" in text and "sweep5.py" not in text  # the first five, by position
    assert "queue:" not in screen(STATUS, JOBS)


def test_the_screen_is_drawn_from_what_the_backend_sends() -> None:
    """The controller's and the registry's answers (plain data) structure into the records drawn."""
    wire = cattrs.unstructure(STATUS)
    assert wire["enabled"] is True and wire["thresholds"]["cpu"] == 80.0 and wire["held"]["desk"]["reason"] == HOLD
    assert cattrs.structure(wire, ControllerStatus) == STATUS
    from grid_core.cli.run import job_records

    registry_rows = [{**cattrs.unstructure(j), "retries": 0} for j in JOBS]  # extra keys are ignored
    assert job_records(registry_rows) == list(JOBS)
    assert "python train.py" in screen(cattrs.structure(wire, ControllerStatus), tuple(job_records(registry_rows)))


def test_the_cli_s_converter_reads_and_writes_what_cattrs_does() -> None:
    """types.wire (neither cattrs nor code generation) against cattrs: the same records back, the same JSON."""
    import json

    from grid_core.types import wire

    entries = [PoolEntry(key="k", node="n", size=3, created=1.0, last_read=2.0, state="ok")]
    for record, kind in ((STATUS, ControllerStatus), (JOBS[0], JobRecord), (STATUS.boosts[0], Boost),
                         (entries, list[PoolEntry])):
        data = cattrs.unstructure(record)
        assert wire().structure(data, kind) == record
        assert json.dumps(wire().unstructure(record)) == json.dumps(data)
    with pytest.raises(Exception):  # noqa: B017  a wrong answer is refused, not half read
        wire().structure({"cluster": "lab", "nodes": [{"role": "head"}]}, ControllerStatus)
    with pytest.raises(ValueError):
        wire().structure({**cattrs.unstructure(STATUS.boosts[0]), "state": "sideways"}, Boost)


RECORDS = (ControllerStatus, ClusterStatus, JobRecord, PoolEntry, NodeMetrics, EngineNode, Boost, HeldWork, Check,
           ShellEnv)


@pytest.mark.parametrize("kind", RECORDS, ids=lambda k: k.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_record_reads_back_as_cattrs_reads_it(kind: type, data: st.DataObject) -> None:
    import json

    from grid_core.types import wire

    attrs.resolve_types(kind)
    record = data.draw(st.from_type(kind))
    plain = json.loads(json.dumps(cattrs.unstructure(record)))  # as it crosses the channel
    ours, theirs = wire().structure(plain, kind), cattrs.structure(plain, kind)
    assert repr(ours) == repr(theirs)  # not ==: a reading may be nan, equal to nothing
    assert json.dumps(wire().unstructure(ours)) == json.dumps(cattrs.unstructure(theirs))


def test_bars_are_coloured_against_the_marks() -> None:
    from grid_core.cli.watch import bar

    assert bar(95, 80, 60).spans[0].style == "red"
    assert bar(65, 80, 60).spans[0].style == "yellow"
    assert bar(10, 80, 60).spans[0].style == "green"


def test_an_empty_status_still_draws() -> None:
    assert "grid offload" in screen(None)
    assert "grid offload" in screen(ControllerStatus())


# ---------------------------------------------------------------------- text others control is never markup

MARKUP = "[/] [bold]x[/bold] [gpu1]:2222"


def test_markup_in_names_reasons_and_commands_is_shown_literally() -> None:
    status = attrs.evolve(STATUS, cluster="[red]lab", policy="[/]",
                          nodes=(attrs.evolve(STATUS.nodes[0], name="[gpu1]:2222", hold=MARKUP),),
                          events=(Event(0.0, "hold", "[gpu1]:2222", MARKUP),))
    jobs = (JobRecord(id="j1", node="[gpu1]:2222", argv=("python", "[/]", "[bold]"), state="running", submitted=0.0),)
    text = screen(status, jobs)
    assert f"lowered 3 ({MARKUP})" in text and "python [/] [bold]" in text and "cluster [red]lab" in text
    assert text.count("[gpu1]:2222") >= 4


def test_tables_and_lines_from_the_output_helpers_are_literal() -> None:
    from grid_core.cli import output

    console = Console(record=True, width=200, color_system=None)
    console.print(output.table(("a", "b"), [(MARKUP, output.styled("[/]", "red")), (None, 3)], title="[bold]t"))
    console.print(output.join(("[x]", "bold"), " [/]"))
    text = console.export_text()
    assert MARKUP in text and "[/]" in text and "[bold]t" in text and "[x] [/]" in text
    assert output.clock(None) == "-" and output.clock("junk") == "-" and output.clock(float("nan")) == "-"


def test_doctor_and_status_tables_keep_bracketed_host_names(capsys: pytest.CaptureFixture[str]) -> None:
    import attrs

    from grid_core.cli.doctor import _print_report
    from grid_core.types import Check

    checks = [attrs.asdict(Check("reachable", True, "via ssh")), attrs.asdict(Check("host_key", False, MARKUP))]
    _print_report([{"node": "[gpu1]", "host": "[gpu1]:2222", "transport": "ssh", "ok": False, "checks": checks}])
    out = capsys.readouterr().out
    assert "[gpu1]:2222" in out and f"[gpu1] host key: {MARKUP}" in out and "0 of 1 nodes ready" in out
