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


def test_the_embedded_default_keeps_a_free_gcs_port_and_a_file_s_port_is_its_own(tmp_path: Path) -> None:
    """The embedded default's GCS port is chosen free once, kept in the state directory and reused;
    one taken by someone else is replaced; the running cluster's own port is kept though it is
    bound; a config file's backend.port is used as written."""
    import socket

    from grid_core.config import embedded_default, structure
    from grid_plugin_ray_backend import layout

    config = embedded_default()
    first = layout.gcs_port(config, "10.0.0.1", None)
    assert first in layout.AUTO_PORTS
    assert (state.state_dir("local") / layout.KEPT_PORT).read_text().strip() == str(first)
    assert layout.gcs_port(config, "10.0.0.1", None) == first
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", first))
        taken.listen()
        assert layout.gcs_port(config, "10.0.0.1", f"10.0.0.1:{first}") == first  # ours, running
        second = layout.gcs_port(config, "10.0.0.1", None)  # someone else's: another one
    assert second != first and second in layout.AUTO_PORTS
    assert layout.gcs_port(config, "10.0.0.1", None) == second
    lab = structure({"name": "lab", "nodes": [{"name": "a", "host": "a.example"}]}, "grid.toml")
    assert layout.gcs_port(lab, "10.0.0.1", None) == 6379
