"""`grid memory` through the real CLI on a grid-started two-node cluster: each command a new process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.local_pair import cli, ok_json

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_put_in_one_process_get_in_another(local_pair: dict[str, Any], tmp_path: Path) -> None:
    data = os.urandom(2 * 2**20)
    source, out = tmp_path / "in.bin", tmp_path / "out.bin"
    source.write_bytes(data)
    put = cli(local_pair, "memory", "put", "weights", str(source), "--node", "w1")
    assert put.returncode == 0, put.stderr
    got = cli(local_pair, "memory", "get", "weights", "-o", str(out))  # the writer has exited
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == data
    entry = next(e for e in ok_json(local_pair, "memory", "ls") if e["key"] == "weights")
    assert (entry["node"], entry["size"], entry["state"]) == ("w1", len(data), "ok")
    assert {"created", "last_read"} <= set(entry)
    stats = {s["node"]: s for s in ok_json(local_pair, "memory", "stats")}
    assert stats["w1"]["used"] >= len(data) and stats["w1"]["capacity"] > stats["w1"]["used"]
    assert cli(local_pair, "memory", "rm", "weights").returncode == 0
    assert "weights" not in [e["key"] for e in ok_json(local_pair, "memory", "ls")]


def test_stdin_and_stdout(local_pair: dict[str, Any]) -> None:
    import subprocess
    import sys

    env = {**os.environ, **local_pair["env"]}
    put = subprocess.run([sys.executable, "-m", "grid_core", "memory", "put", "piped", "-"], input=b"via stdin",
                         capture_output=True, env=env, timeout=120)
    assert put.returncode == 0, put.stderr
    got = subprocess.run([sys.executable, "-m", "grid_core", "memory", "get", "piped"], capture_output=True, env=env,
                         timeout=120)
    assert got.stdout == b"via stdin"
    cli(local_pair, "memory", "rm", "piped")


@pytest.mark.parametrize(("args", "message"), [
    (["get", "nothing-here"], "no entry named 'nothing-here'"),
    (["get", "bad key!"], "invalid key"),
    (["rm", "nothing-here"], "no entry named 'nothing-here'"),
    (["put", "k", "/no/such/file"], "cannot read /no/such/file"),
    (["put", "k", "-", "--node", "mars"], "no node named 'mars'"),
    (["put", "k", "-", "--evict", "fifo"], "Invalid value for '--evict'"),
])
def test_bad_input_is_one_clear_message(local_pair: dict[str, Any], args: list[str], message: str) -> None:
    result = cli(local_pair, "memory", *args)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert "k" not in [e["key"] for e in json.loads(cli(local_pair, "memory", "ls", "--json").stdout)]
