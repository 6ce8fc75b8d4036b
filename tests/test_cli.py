"""The CLI through the real `grid` executable: every group at least once, and its errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from tests.conftest import grid, grid_json

GRID_EXE = shutil.which("grid", path=os.path.dirname(sys.executable))


def test_help_lists_commands_from_the_registry() -> None:
    assert GRID_EXE, "the grid console script is installed beside the interpreter"
    result = subprocess.run([GRID_EXE, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for name in ("cluster", "config", "exec", "plugins"):
        assert f"  {name} " in result.stdout


def test_help_imports_no_heavy_module() -> None:
    probe = ("import sys; from grid_core.cli import main; sys.argv=['grid','--help']\n"
             "try: main()\nexcept SystemExit: pass\n"
             "heavy = {'ray', 'paramiko', 'rich', 'cattrs', 'numpy'} & set(sys.modules)\n"
             "print(sorted(heavy), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stderr.strip() == "[]"


def test_version_names_core_and_plugins() -> None:
    result = grid("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("grid-core ")
    assert "grid-plugin-ssh-paramiko" in result.stdout


def test_plugins_list_table_and_json() -> None:
    table = grid("plugins", "list")
    assert table.returncode == 0 and "least-loaded" in table.stdout and "active" in table.stdout
    records = grid_json("plugins", "list")
    assert isinstance(records, list)
    for record in records:
        assert {"name", "version", "status", "hooks"} <= set(record)
    names = {r["name"] for r in records}
    assert {"local", "psutil", "least-loaded", "ssh-paramiko", "ray-backend", "threshold-offload",
            "memory-pool"} <= names


def test_config_init_validate_show(tmp_path: Path) -> None:
    target = tmp_path / "grid.toml"
    created = grid("config", "init", str(target))
    assert created.returncode == 0 and target.exists()
    assert "#" in target.read_text()  # commented
    again = grid("config", "init", str(target))
    assert again.returncode != 0 and "already exists" in again.stderr
    valid = grid("config", "validate", "-c", str(target))
    assert valid.returncode == 0 and "valid" in valid.stdout
    # ./grid.toml is found without -c, and -c is accepted before the command too.
    shown = grid_json("config", "show", cwd=tmp_path)
    assert shown["name"] == "my-cluster" and shown["source"] == "grid.toml"  # type: ignore[index]
    before = grid("-c", str(target), "config", "show")
    assert before.returncode == 0 and 'name = "my-cluster"' in before.stdout


def test_config_errors_are_one_message_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[nodes]]\nname = "a"\ngpu_count = "two"\nmystery = 1\n')
    result = grid("config", "validate", "-c", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "nodes[0].gpu_count: expected int, got 'two'" in result.stderr
    assert "unknown key 'mystery'" in result.stderr and "Traceback" not in result.stderr
    missing = grid("cluster", "status", "-c", str(tmp_path / "absent.toml"))
    assert missing.returncode == 2 and "config file not found" in missing.stderr
    env_missing = grid("config", "show", env={"GRID_CONFIG": str(tmp_path / "gone.toml")})
    assert env_missing.returncode == 2 and "gone.toml" in env_missing.stderr
    debug = grid("--debug", "config", "validate", "-c", str(bad))
    assert "Traceback" in debug.stderr


def test_exec_on_the_local_default() -> None:
    result = grid("exec", "--", "echo", "hello grid")
    assert result.returncode == 0
    assert "local" in result.stdout and "hello grid" in result.stdout
    failing = grid("exec", "--", "sh", "-c", "exit 3")
    assert failing.returncode == 3
    data = grid_json("exec", "--all", "--json", "--", "printf", "%s", "$(touch /tmp/x) 'q'")
    assert data == [{"node": "local", "exit_status": 0, "stdout": "$(touch /tmp/x) 'q'", "stderr": "",  # type: ignore[comparison-overlap]
                     "error": None, "seconds": data[0]["seconds"]}]  # type: ignore[index]


def test_exec_worst_status_across_nodes(tmp_path: Path) -> None:
    cfg = tmp_path / "two.toml"
    cfg.write_text('[[nodes]]\nname = "a"\ntags = ["x"]\n[[nodes]]\nname = "b"\ntags = ["x"]\n')
    # Node a exits 0 and node b exits 4 (each `mkdir` of one shared directory: only the first wins).
    shared = tmp_path / "once"
    result = grid("exec", "-c", str(cfg), "--tag", "x", "--parallel", "1", "--", "sh", "-c",
                  f"mkdir {shared} 2>/dev/null || exit 4")
    assert result.returncode == 4 and "── a" in result.stdout and "── b" in result.stdout
    assert "exit 0" in result.stdout and "exit 4" in result.stdout
    ok = grid_json("exec", "-c", str(cfg), "--node", "b", "--json", "--", "true")
    assert [r["node"] for r in ok] == ["b"]  # type: ignore[union-attr, index]


@pytest.mark.parametrize(("args", "message"), [
    (["exec", "--node", "nope", "--", "true"], "no node named 'nope'"),
    (["exec", "--tag", "nope", "--", "true"], "no node has the tag 'nope'"),
    (["exec", "--parallel", "0", "--", "true"], "--parallel"),
    (["exec", "--timeout", "x", "--", "true"], "--timeout"),
    (["exec", "--all", "--node", "local", "--", "true"], "--all cannot be combined"),
    (["exec"], "Missing argument"),
    (["nosuchcommand"], "No such command"),
])
def test_bad_arguments_are_clear(args: list[str], message: str) -> None:
    result = grid(*args)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_exec_of_a_missing_program_reports_it() -> None:
    result = grid("exec", "--", "no-such-program-grid")
    assert result.returncode == 127 and "no-such-program-grid" in result.stderr


def test_cluster_status_on_the_local_default() -> None:
    data = grid_json("cluster", "status")
    node = data["nodes"][0]  # type: ignore[index]
    assert node["name"] == "local" and node["reachable"] is True and node["role"] == "head"
    assert node["metrics_age"] is None  # no cluster runs: this command read the machine itself
    assert 0 <= node["cpu_percent"] <= 100 and node["memory_bytes"] > 0 and node["cpus"] >= 1
    table = grid("cluster", "status")
    assert table.returncode == 0 and "local" in table.stdout


def test_logging_section_json_to_a_file_and_verbose(tmp_path: Path) -> None:
    log = tmp_path / "grid.log"
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'[[nodes]]\nname = "a"\n[logging]\nlevel = "DEBUG"\nformat = "json"\nfile_path = "{log}"\n')
    result = grid("exec", "-c", str(cfg), "--", "true")
    assert result.returncode == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    # -v raises the level for one run: diagnostics on stderr, results untouched on stdout.
    quiet = grid("exec", "--", "echo", "x")
    loud = grid("-vv", "exec", "--", "echo", "x")
    took = re.compile(r"\d+\.\d+ s\)")  # how long each run took differs, nothing else may
    assert took.sub("", quiet.stdout) == took.sub("", loud.stdout) and len(loud.stderr) > len(quiet.stderr)


def test_doctor_without_the_backend_s_plugin_skips_its_check_and_says_why(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text('name = "lone"\n[[nodes]]\nname = "here"\nhost = "localhost"\nrole = "head"\n')
    blocked = {"GRID_DISABLE_PLUGINS": "ray-backend"}  # as if grid-plugin-ray-backend were not installed
    result = grid("-c", str(cfg), "doctor", "--json", env=blocked)
    assert result.returncode == 0, result.stderr
    assert "warning: the engine check was skipped: no backend named 'ray'" in result.stderr
    assert "install grid-plugin-ray-backend" in result.stderr
    [row] = json.loads(result.stdout)
    checks = {c["name"]: c for c in row["checks"]}
    assert set(checks) == {"reachable", "python", "plugins"} and row["ok"]
    assert checks["python"]["detail"].startswith("3.")
    table = grid("-c", str(cfg), "doctor", env=blocked)
    assert table.returncode == 0 and "1 of 1 nodes ready" in table.stdout and "engine check was skipped" in table.stderr



CELL = st.text(alphabet=" -.:/_abcXYZ019", max_size=12) | st.text(alphabet="é✓a", max_size=2)  # only rich: é, ✓


@given(columns=st.lists(CELL.filter(bool), min_size=1, max_size=5),
       rows=st.lists(st.lists(CELL, min_size=5, max_size=5), max_size=4), title=st.none() | CELL)
def test_a_table_printed_to_a_pipe_without_rich_is_what_rich_prints(columns: list[str], rows: list[list[str]],
                                                                     title: str | None) -> None:
    """print_table's path for pipes (no rich import) writes rich's bytes, or leaves it to rich."""
    import io

    from rich.console import Console

    from grid_core.cli.output import PIPE_WIDTH, _plain_table, table

    rows = [row[: len(columns)] for row in rows]
    ours = _plain_table(columns, [list(r) for r in rows], title or None)
    event("plain" if ours is not None else "left to rich")
    if ours is None:
        return
    sink = io.StringIO()
    Console(file=sink, highlight=False, width=PIPE_WIDTH, force_terminal=False, no_color=True).print(
        table(columns, rows, title or None))
    assert ours == sink.getvalue()
