"""A lab of mixed GPUs on a real Ray cluster, through the CLI: nodes that declare different models and
memory sizes (Ray is given their GPUs without the cards), jobs asked by model, memory and lists, the
failures that name the cluster's GPUs, and a plain Ray program's `accelerator_type=`.

One cluster of this machine serves the module: two raylets on the `local` transport, `desk` with an
RTX 4090 and `lab` with two A100s, as the config declares them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grid_core.config import load_file
from grid_plugin_ray_backend import layout, onnode
from tests.conftest import grid

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

INVENTORY = "1x RTX 4090 24 GB (desk), 2x A100 40 GB (lab)"
SHOW_GPUS = "import os; print('gpus=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab() -> Iterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="grg", dir="/tmp"))  # short: Unix socket paths hold 107 bytes
    env = {"HOME": str(root / "home"), "GRID_STATE_DIR": str(root / "state"), "RAY_TMPDIR": str(root / "rt"),
           "XDG_STATE_HOME": str(root / "xdg"), "RAY_AUTH_MODE": "disabled",
           "GRID_GPU_CLAIMS": str(root / "claims")}  # not this machine's: its GPUs are not the test's
    for key in ("HOME", "RAY_TMPDIR"):
        Path(env[key]).mkdir(parents=True)
    config = root / "grid.toml"
    config.write_text(textwrap.dedent(f"""
        name = "gpulab"
        [[nodes]]
        name = "desk"
        role = "head"
        transport = "local"
        cpu_count = 2
        memory_gb = 2
        gpus = [{{ model = "RTX 4090", memory_gb = 24 }}]
        [[nodes]]
        name = "lab"
        transport = "local"
        cpu_count = 2
        memory_gb = 2
        gpu_count = 2
        gpus = [{{ model = "A100", memory_gb = 40 }}, {{ model = "A100", memory_gb = 40 }}]
        [backend]
        port = {_free_port()}
        """))
    env["GRID_CONFIG"] = str(config)
    started = grid("cluster", "start", env=env, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield env
    finally:
        grid("cluster", "stop", env=env, timeout=120)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RAY_TMPDIR", env["RAY_TMPDIR"])
            mp.setenv("GRID_STATE_DIR", env["GRID_STATE_DIR"])
            cfg = load_file(config)
            for node in cfg.nodes:
                for pid in onnode.grid_processes(layout.node_dir(cfg, node))[0]:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def run_job(env: dict[str, str], *options: str) -> tuple[str, str]:
    """A detached job with `options`, waited for: the node it ran on and what it printed."""
    started = grid("run", "--detach", *options, "--", sys.executable, "-c", SHOW_GPUS, env=env, timeout=120)
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.strip()
    logs = grid("jobs", "logs", job_id, "--follow", env=env, timeout=120)
    assert logs.returncode == 0, logs.stderr
    (job,) = [j for j in json.loads(grid("jobs", "list", "--json", env=env).stdout) if j["id"] == job_id]
    return job["node"], logs.stdout.strip()


def test_status_shows_each_node_s_gpus(lab: dict[str, str]) -> None:
    result = grid("cluster", "status", "--json", env=lab)
    assert result.returncode == 0, result.stderr
    nodes = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    assert [(g["model"], g["memory_bytes"] // 2**30, g["source"]) for g in nodes["lab"]["gpu_models"]] == [
        ("A100", 40, "config"), ("A100", 40, "config")]
    res = nodes["lab"]["resources"]
    assert res["GPU"]["total"] == 2 and res["accelerator_type:A100"]["total"] == 1
    assert res["grid-gpu-memory-ge-32GB"]["total"] == 2 and "grid-gpu-memory-ge-32GB" not in nodes["desk"]["resources"]
    table = grid("cluster", "status", env={**lab, "COLUMNS": "250"})
    assert "1x RTX 4090 24 GB" in table.stdout and "2x A100 40 GB" in table.stdout


@pytest.mark.parametrize(("options", "node"), [
    (("--gpus", "1", "--gpu-type", "a100"), "lab"),
    (("--gpus", "1", "--gpu-memory", "30G"), "lab"),
    (("--gpus", "1", "--gpu-type", "4090,3090"), "desk"),
    (("--gpus", "0.5", "--gpu-type", "RTX 4090", "--gpu-memory", "24G"), "desk"),
])
def test_a_job_lands_on_a_node_with_the_gpus_it_names(lab: dict[str, str], options: tuple[str, ...],
                                                      node: str) -> None:
    ran_on, out = run_job(lab, *options)
    assert ran_on == node and out.startswith("gpus=") and out != "gpus=unset"  # Ray handed it a GPU


def test_ray_holds_the_job_to_the_model_and_memory_class(lab: dict[str, str], tmp_path: Path) -> None:
    """While a job that asked for an A100 with 30 GB runs, Ray counts it against lab's
    accelerator_type:A100 and the 24 GB class (the one at or below 30), not only its GPU."""
    done = tmp_path / "done"
    wait = f"import os, time\nwhile not os.path.exists({str(done)!r}): time.sleep(0.1)"
    started = grid("run", "--detach", "--gpus", "1", "--gpu-type", "A100", "--gpu-memory", "30G", "--",
                   sys.executable, "-c", wait, env=lab, timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        used: dict[str, float] = {}
        for _ in range(60):
            status = json.loads(grid("cluster", "status", "--json", env=lab).stdout)
            resources = next(n for n in status["nodes"] if n["name"] == "lab")["resources"]
            used = {k: resources[k]["used"] for k in ("GPU", "accelerator_type:A100", "grid-gpu-memory-ge-24GB")}
            if used["GPU"]:
                break
            time.sleep(0.5)
        assert used == pytest.approx({"GPU": 1.0, "accelerator_type:A100": 0.001, "grid-gpu-memory-ge-24GB": 1.0})
    finally:
        done.touch()
    assert grid("jobs", "logs", started.stdout.strip(), "--follow", env=lab, timeout=120).returncode == 0


@pytest.mark.parametrize(("options", "message"), [
    (("--gpus", "1", "--gpu-memory", "48G"), f"no node has a GPU with 48 GB; the cluster has {INVENTORY}"),
    (("--gpus", "1", "--gpu-type", "3090"), f"no node has a 3090 GPU; the cluster has {INVENTORY}"),
    (("--gpus", "3", "--gpu-type", "A100"), f"no node has 3 A100 GPUs; the cluster has {INVENTORY}"),
    (("--node", "desk", "--gpus", "1", "--gpu-type", "A100"), "node desk does not have an A100 GPU: it has "
                                                              "1x RTX 4090 24 GB"),
    (("--gpu-type", "A100"), "--gpu-type and --gpu-memory need --gpus"),
])
def test_a_request_nothing_meets_fails_at_once_naming_the_gpus(lab: dict[str, str], options: tuple[str, ...],
                                                               message: str) -> None:
    result = grid("run", *options, "--", "true", env=lab, timeout=60)
    assert result.returncode != 0 and result.returncode != 70
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_plain_ray_program_s_accelerator_type_lands_right(lab: dict[str, str]) -> None:
    shell = grid("cluster", "env", "--json", env=lab)
    assert shell.returncode == 0, shell.stderr
    variables = json.loads(shell.stdout)["variables"]
    program = textwrap.dedent("""
        import ray
        ray.init(log_to_driver=False)
        names = {n["NodeID"]: k.split("grid-node-", 1)[1] for n in ray.nodes() for k in n["Resources"]
                 if k.startswith("grid-node-")}

        def where():
            return ray.get_runtime_context().get_node_id()

        for options in ({"accelerator_type": "A100"}, {"accelerator_type": "RTX-4090"},
                        {"resources": {"grid-gpu-memory-ge-32GB": 1}}):
            node = ray.get(ray.remote(where).options(num_gpus=1, num_cpus=0, **options).remote())
            print(names[node])
        """)
    env = {k: v for k, v in {**os.environ, **lab, **variables}.items() if k != "RAY_AUTH_TOKEN"}
    result = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["lab", "desk", "lab"]


def test_a_gpu_boost_lends_only_from_a_node_with_that_kind(lab: dict[str, str]) -> None:
    made = grid("boost", "request", "desk", "gpu", "1", "--gpu-type", "A100", "--json", env=lab, timeout=60)
    assert made.returncode == 0, made.stderr
    boost: dict[str, Any] = json.loads(made.stdout)
    assert boost["source"] == "lab" and boost["note"] == "an A100 GPU"
    assert grid("boost", "release", boost["id"], env=lab, timeout=60).returncode == 0
    refused = grid("boost", "request", "desk", "gpu", "1", "--gpu-memory", "48G", env=lab, timeout=60)
    assert refused.returncode != 0 and "no node has a GPU with 48 GB; the cluster has 2x A100 40 GB (lab)" \
        in refused.stderr
