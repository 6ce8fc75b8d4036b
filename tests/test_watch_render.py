"""The watch dashboard drawn headless from a status snapshot."""

from __future__ import annotations

import pytest
from rich.console import Console

from grid_core.cli.watch import render

STATUS = {
    "cluster": "lab", "enabled": True, "policy": "threshold", "interval_seconds": 2,
    "thresholds": {"cpu": 80.0, "memory": 70.0, "gpu": 90.0}, "low": {"cpu": 60.0, "memory": 55.0, "gpu": 70.0},
    "nodes": [
        {"name": "desk", "role": "head", "cpu_percent": 93.0, "memory_percent": 40.0, "gpu_percent": None,
         "hold": "cpu 93% >= 80% for 2 readings"},
        {"name": "gpu1", "role": "worker", "cpu_percent": 12.0, "memory_percent": 65.0, "gpu_percent": 20.0,
         "hold": None},
    ],
    "boosts": [{"id": "b1", "target": "desk", "source": "gpu1", "resource": "cpu", "amount": 2.0,
                "priority": "high", "expires_at": None, "state": "active"}],
    "jobs": [{"job_id": "j1", "node": "gpu1", "argv": ["python", "train.py"], "state": "running"}],
    "events": [{"time": 0, "kind": "hold", "node": "desk", "reason": "cpu 93% >= 80%"}],
}


def screen(status: dict[str, object]) -> str:
    console = Console(record=True, width=160, color_system=None)
    console.print(render(status))
    return console.export_text()


def test_rows_states_boosts_jobs_and_events_appear() -> None:
    text = screen(STATUS)
    desk = next(line for line in text.splitlines() if line.strip().startswith("desk"))
    assert "93%" in desk and "held (cpu 93% >= 80% for 2 readings)" in desk
    gpu1 = next(line for line in text.splitlines() if line.strip().startswith("gpu1"))
    assert "free" in gpu1 and "65%" in gpu1
    assert "auto on" in text and "b1" in text and "python train.py" in text and "last events" in text


def test_bars_are_coloured_against_the_marks() -> None:
    from grid_core.cli.watch import bar

    assert bar(95, 80, 60).spans[0].style == "red"
    assert bar(65, 80, 60).spans[0].style == "yellow"
    assert bar(10, 80, 60).spans[0].style == "green"


def test_an_empty_status_still_draws() -> None:
    assert "grid offload" in screen({})


# ---------------------------------------------------------------------- text others control is never markup

MARKUP = "[/] [bold]x[/bold] [gpu1]:2222"


def test_markup_in_names_reasons_and_commands_is_shown_literally() -> None:
    status = {**STATUS, "cluster": "[red]lab", "policy": "[/]",
              "nodes": [{**STATUS["nodes"][0], "name": "[gpu1]:2222", "hold": MARKUP}],  # type: ignore[index]
              "jobs": [{"job_id": "j1", "node": "[gpu1]:2222", "argv": ["python", "[/]", "[bold]"],
                        "state": "running"}],
              "events": [{"time": 0, "kind": "hold", "node": "[gpu1]:2222", "reason": MARKUP}]}
    text = screen(status)
    assert f"held ({MARKUP})" in text and "python [/] [bold]" in text and "cluster [red]lab" in text
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

    from grid_core.cli.doctor import Check, _print_report

    checks = [attrs.asdict(Check("reachable", True, "via ssh")), attrs.asdict(Check("host_key", False, MARKUP))]
    _print_report([{"node": "[gpu1]", "host": "[gpu1]:2222", "transport": "ssh", "ok": False, "checks": checks}])
    out = capsys.readouterr().out
    assert "[gpu1]:2222" in out and f"[gpu1] host key: {MARKUP}" in out and "0 of 1 nodes ready" in out
