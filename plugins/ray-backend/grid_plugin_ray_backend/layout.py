"""Where grid keeps things on a node, and the `ray start` command line.

Each node gets one directory of grid's own, `<base>/grid-<cluster>-<node>-<digest>` (mode 0700): the token
(`auth_token`, 0600) and Ray's temp dir (`ray/`, which Ray makes world-writable; the 0700 parent
keeps others out). Ray's processes name that temp dir on their command lines, which is how grid
finds, on each node, exactly the processes it started (onnode.py).
"""

from __future__ import annotations

import json
import os
import posixpath
import socket
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from grid_core.cluster import on_node
from grid_core.state import state_base
from grid_core.types import Transport, TransportError

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig, NodeConfig
    from grid_core.types import GpuInfo

NODE_RESOURCE = "grid-node-{}"
SERVICE = "grid-service"  # the service's detached actor (service.py), which every agent reports to
# Ray's longest socket path is <temp>/ray/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store;
# a Unix socket path holds at most 107 bytes.
SOCKET_SUFFIX = len("/ray/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
# Ray waits this long before it runs a failed task again: the offload controller, having stopped a
# task on the held head, reserves the CPUs it freed in the meantime, so the retry goes elsewhere.
RETRY_DELAY_MS = 2000
# Options grid sets itself; the same keys in a node's ray_start_params would break what grid relies on.
RESERVED = frozenset({"head", "address", "port", "temp-dir", "block", "include-dashboard"})
# The embedded default's GCS port is chosen here (gcs_port): above Ray's worker ports (10002-19999),
# below Linux's ephemeral ones (32768 on), and kept in the state directory under KEPT_PORT.
AUTO_PORTS = range(20000, 30000)
KEPT_PORT = "gcs-port"


@cache
def onnode_source() -> str:
    from importlib import resources  # here: importlib.resources and .metadata cost a status command 15 ms

    return resources.files("grid_plugin_ray_backend").joinpath("onnode.py").read_text()


def node_resource(name: str) -> str:
    """The custom resource that names a node, so work can be pinned to it."""
    return NODE_RESOURCE.format(name)


def grid_names(ray_nodes: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Ray node id: grid node name, for entries of `ray.nodes()`, by their node_resource."""
    prefix = NODE_RESOURCE.format("")
    return {n["NodeID"]: k[len(prefix):] for n in ray_nodes for k in n["Resources"] if k.startswith(prefix)}


def gcs_port(config: ClusterConfig, host: str, recorded: str | None) -> int:
    """The port of the head's GCS. A config file names it (backend.port, 6379 by default). The
    embedded default is every user's and every state directory's on one machine, so one fixed port
    would collide (another user's Ray, the demo left running beside the tests): its port is chosen
    free at its first start, kept, and reused while it is ours (`recorded`, the running cluster's
    address) or still free."""
    from grid_core.config import EMBEDDED_DEFAULT
    from grid_core.errors import GridError
    from grid_core.state import state_dir, write_atomic

    if config.source != EMBEDDED_DEFAULT:
        return config.backend.port
    kept_file = state_dir(config.name) / KEPT_PORT
    try:
        kept = int(kept_file.read_text())
    except (OSError, ValueError):
        kept = 0
    if kept in AUTO_PORTS and (recorded == f"{host}:{kept}" or _port_free(kept)):
        return kept
    # Each user and state directory starts looking at its own place in the range, so two of them
    # rarely try the same ports.
    import zlib

    start = zlib.crc32(f"{os.getuid()}:{os.path.realpath(state_base())}:{config.name}".encode())
    for i in range(200):
        port = AUTO_PORTS[(start + i) % len(AUTO_PORTS)]
        if _port_free(port):
            write_atomic(kept_file, f"{port}\n")
            return port
    raise GridError(f"no free port for the GCS in {AUTO_PORTS.start}-{AUTO_PORTS.stop - 1} on this machine")


def _port_free(port: int) -> bool:
    """Nothing is bound to the port on any address (a wildcard bind fails if anything is)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def node_base(config: ClusterConfig, node: NodeConfig) -> str:
    """Where grid's directories on the node go: backend.temp_dir, else $RAY_TMPDIR or /tmp."""
    if config.backend.temp_dir:
        return on_node(node, config.backend.temp_dir)
    if node.transport_name == "local":
        import tempfile

        return os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    return "/tmp"


def door_dir(config: ClusterConfig) -> str:
    """Where the lab's members reach the service on the head (service.py's door; docs/security.md):
    a name they work out from the config alone, as they have none of the owner's records."""
    return posixpath.join(node_base(config, config.head), f"grid-{config.name}-door")


def node_dir(config: ClusterConfig, node: NodeConfig) -> str:
    """grid's directory on the node: under backend.temp_dir, else $RAY_TMPDIR or /tmp."""
    base = node_base(config, node)
    # The digest makes the name unambiguous (cluster `lab` with node `gpu-1` and cluster `lab-gpu`
    # with node `1` read alike) and unique per user and grid state directory: two users, or two
    # HOMEs, that run the same cluster name on one machine never share a directory.
    owner = f"{os.getuid()}:{socket.gethostname()}:{os.path.realpath(state_base())}"
    import hashlib

    digest = hashlib.sha1(f"{config.name}\0{node.name}\0{owner}".encode()).hexdigest()[:10]
    path = posixpath.join(base, f"grid-{config.name}-{node.name}-{digest}")
    if len(path) + SOCKET_SUFFIX > 107:
        path = posixpath.join(base, f"grid-{digest}")
    return path


# Each directory is made 0700, or, where it exists, checked: a directory of this user's own, not a
# link, mode 0700. One that another user made first could hold planted files (a wheel pip would
# install, a token), so it is refused with the reason, never used.
PRIVATE_DIRS = r"""umask 077
for d; do
  mkdir -p "$d" || exit 1
  if [ -L "$d" ] || [ ! -O "$d" ]; then echo "refusing $d: it is not $(id -un)'s own directory" >&2; exit 1; fi
  m=$(stat -c %a "$d") || exit 1
  [ "$m" = 700 ] || { echo "refusing $d: its mode is $m, not 700 (remove it if it is yours)" >&2; exit 1; }
done"""


def make_private(transport: Transport, *directories: str) -> None:
    """Make (or check) grid's own directories on a node, parents first; TransportError says why not."""
    result = transport.run(["sh", "-c", PRIVATE_DIRS, "sh", *directories], timeout=60)
    if result.exit_status != 0:
        raise TransportError(result.stderr.strip() or f"cannot make {directories[-1]}: exit {result.exit_status}")


def token_path(directory: str) -> str:
    return posixpath.join(directory, "auth_token")


def _resources(value: Any) -> dict[str, float]:
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"resources must be a table or a JSON object, got {value!r}")
    return {str(k): float(v) for k, v in value.items()}


def start_options(config: ClusterConfig, node: NodeConfig,
                  gpus: Sequence[GpuInfo] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The node's own `ray start` options (sizes, its GPUs' models and memory classes, seed
    ray_start_params) and notes on ignored keys. `gpus`: what the driver there reports (the
    config's where None or empty)."""
    from grid_core.gpus import configured, start_resources

    options: dict[str, Any] = {}
    notes = []
    if node.cpu_count is not None:
        options["num-cpus"] = node.cpu_count
    if node.gpu_total is not None:
        options["num-gpus"] = node.gpu_total
    if node.memory_gb is not None:
        options["memory"] = int(node.memory_gb * 2**30)
    resources = {node_resource(node.name): 1000.0, **start_resources(gpus or configured(node))}
    for key, value in node.ray_start_params.items():
        flag = key.replace("_", "-").lstrip("-")
        if flag == "resources":
            resources.update(_resources(value))
        elif flag in RESERVED:
            notes.append(f"ray_start_params.{key} is set by grid and ignored")
        else:
            options[flag] = value
    options["resources"] = json.dumps(resources, sort_keys=True)
    return options, notes


def _system_config(options: dict[str, Any]) -> str:
    """The head's Ray system config: ray_start_params' own (a JSON object), with grid's retry delay
    unless set there."""
    from grid_core.errors import GridError

    given = options.pop("system-config", None)
    try:
        system = json.loads(given) if isinstance(given, str) else {}
    except ValueError as exc:
        raise GridError(f"ray_start_params.system_config is not JSON: {exc}") from None
    if not isinstance(system, dict):
        raise GridError("ray_start_params.system_config must be a JSON object, e.g. '{\"key\": 1}'")
    system.setdefault("task_retry_delay_ms", RETRY_DELAY_MS)
    return json.dumps(system, sort_keys=True)


def ray_start_argv(config: ClusterConfig, node: NodeConfig, *, python: str, address: str, directory: str,
                   head_address: str | None, gpus: Sequence[GpuInfo] | None = None,
                   port: int | None = None) -> list[str]:
    """`python -m ray.scripts.scripts start ...` for a head (head_address None, its GCS on `port`,
    else backend.port) or a worker; `gpus`: the node's GPUs as its probe found them."""
    options, _ = start_options(config, node, gpus)
    options.setdefault("node-ip-address", address)
    argv = [python, "-m", "ray.scripts.scripts", "start"]
    if head_address is None:
        argv += ["--head", f"--port={port or config.backend.port}", f"--system-config={_system_config(options)}"]
        if config.backend.dashboard:
            argv += ["--include-dashboard=true", f"--dashboard-host={options['node-ip-address']}",
                     f"--dashboard-port={config.backend.dashboard_port}"]
        else:
            argv.append("--include-dashboard=false")
    else:
        argv.append(f"--address={head_address}")
    argv += [f"--temp-dir={posixpath.join(directory, 'ray')}", "--disable-usage-stats"]
    for flag, value in options.items():
        if value is True:
            argv.append(f"--{flag}")
        elif value is not False and value is not None:
            argv.append(f"--{flag}={value}")
    return argv
