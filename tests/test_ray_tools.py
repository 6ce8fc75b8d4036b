"""Ray's own tools and a plain `ray.init()` against a grid cluster (issue: Ray's own tools reach it).

The shared two-node cluster of this machine (tests/local_pair.py): the head is where the script runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import REPO
from tests.local_pair import cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PLAIN_SCRIPT = "import ray\nray.init()\nprint(len([n for n in ray.nodes() if n['Alive']]))\n"


def _gcs_servers() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "gcs_server"}


def _shell(c: dict[str, Any], script: str, cwd: Path | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, **c["env"], "PATH": f"{bin_dir}:{os.environ['PATH']}", **extra}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def page_block() -> list[str]:
    """docs/ray-tools.md's commands, but `ray job submit` (it needs the dashboard, off on grid's
    clusters by default, and ray[default]) and fish's line (its grid commands run in test_docs)."""
    page = (REPO / "docs" / "ray-tools.md").read_text()
    block = re.search(r"```sh\n(.*?)```", page, re.S)
    assert block
    lines = [raw.split("#")[0].strip() for raw in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith(("ray job submit", "grid cluster env --shell fish"))]


def test_the_page_s_commands_reach_the_cluster_and_a_plain_ray_init_starts_nothing(local_pair: dict[str, Any],
                                                                                   tmp_path: Path) -> None:
    lines = page_block()
    assert lines == ['eval "$(grid cluster env)"', "ray status", "python train.py"]
    (tmp_path / "train.py").write_text(PLAIN_SCRIPT)
    before = _gcs_servers()
    ran = _shell(local_pair, " && ".join(lines), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    *status, script = ran.stdout.strip().splitlines()
    assert "\n".join(status).count(" node_") == 2, ran.stdout  # `ray status`: both of grid's nodes, by id
    assert script == "2"  # the plain script saw both nodes too
    assert "Started a local Ray instance" not in ran.stderr
    assert _gcs_servers() - before == set()  # no second GCS (one of an earlier test may end meanwhile)


def test_without_the_env_start_says_what_to_run_and_doctor_warns_of_a_stray_token(
        local_pair: dict[str, Any]) -> None:
    """The documented behaviour without the env: `cluster start` names the command, and doctor
    warns of what would catch a plain script (here, a ~/.ray/auth_token of another cluster)."""
    again = cli(local_pair, "cluster", "start")
    assert again.returncode == 0 and 'eval "$(grid cluster env)"' in again.stderr
    stray = Path(local_pair["env"]["HOME"], ".ray", "auth_token")
    stray.parent.mkdir(exist_ok=True)
    stray.write_text("another-clusters-token")
    try:
        doctor = cli(local_pair, "doctor")
        assert f"warning: {stray} differs from cluster offl's token" in doctor.stderr, doctor.stderr
    finally:
        stray.unlink()
    assert "auth_token differs" not in cli(local_pair, "doctor").stderr


def test_cluster_env_for_fish_and_json(local_pair: dict[str, Any]) -> None:
    fish = cli(local_pair, "cluster", "env", "--shell", "fish")
    assert fish.returncode == 0
    assert "set -gx RAY_AUTH_MODE token;" in fish.stdout and "set -e RAY_AUTH_TOKEN;" in fish.stdout
    data = json.loads(cli(local_pair, "cluster", "env", "--json").stdout)
    assert data["cluster"] == "offl"
    assert set(data["variables"]) >= {"RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"}
