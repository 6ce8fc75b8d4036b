"""grid's state directory: atomic writes, clear errors when it cannot be used, records it can trust."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from grid_core import state
from grid_core.errors import GridError
from grid_plugin_ray_backend import records
from tests.conftest import grid


def test_an_unusable_state_directory_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GRID_STATE_DIR", str(blocker / "state"))
    with pytest.raises(GridError, match=f"cannot use the state directory {blocker / 'state' / 'lab'}"):
        records.save("lab", records.Records("10.0.0.1:6379"))
    result = grid("jobs", "list")  # the CLI: one line, exit 1, the path and what to do
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"error: cannot use the state directory {blocker / 'state'}")
    assert "GRID_STATE_DIR" in result.stderr and "Traceback" not in result.stderr
    assert blocker.read_text() == "not a directory"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(monkeypatch: pytest.MonkeyPatch) -> None:
    records.save("lab", records.Records("10.0.0.1:6379"))
    directory = state.state_dir("lab")
    before = (directory / records.FILE).read_text()

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(GridError, match=f"cannot write {directory / records.FILE}: No space left on device"):
        records.save("lab", records.Records("10.9.9.9:6379"))
    assert (directory / records.FILE).read_text() == before
    assert sorted(p.name for p in directory.iterdir()) == [records.FILE]
    assert (directory / records.FILE).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", ""])
def test_cluster_names_cannot_leave_the_state_directory(name: str) -> None:
    with pytest.raises(GridError, match="cannot name a directory"):
        state.state_dir(name)


@pytest.mark.parametrize(("text", "why"), [
    ("[]", "expected a JSON object, got list"),
    ("junk", "Expecting value"),
    ('{"gcs_address": "a:1", "owner": "x"}', "unknown field owner"),
    ('{"nodes": {"h": {"directory": "/d", "address": "a", "python": "p", "head": "yes"}}}', "nodes.h.head"),
    ('{"nodes": {"h": {"directory": "/d", "address": "a", "python": "p", "head": true, "pid": 1}}}',
     "unknown field nodes.h.pid"),
])
def test_a_record_grid_did_not_write_is_a_clear_error(text: str, why: str) -> None:
    path = state.state_dir("lab") / records.FILE
    path.write_text(text)
    with pytest.raises(GridError) as raised:
        records.load("lab")
    assert str(path) in str(raised.value) and why in str(raised.value) and "delete the file" in str(raised.value)


def test_records_round_trip_and_an_empty_object_is_no_record() -> None:
    saved = records.Records("10.0.0.1:6379", {"h": records.NodeRecord("/d", "10.0.0.1", "/py", True)})
    records.save("lab", saved)
    assert records.load("lab") == saved
    (state.state_dir("lab") / records.FILE).write_text(json.dumps({}))
    assert records.load("lab") == records.Records()
