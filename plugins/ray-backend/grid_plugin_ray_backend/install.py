"""`grid cluster install`: each node gets a venv with this machine's Ray and grid (core and plugins).

What "the same" means: the exact versions installed here of ray, grid-core and every distribution
that registers grid plugins. Those a node lacks are built into wheels here (`pip wheel` from the
source trees they were installed from), or taken as the wheel file they were installed from, or
from the wheelhouse; the wheels are copied to each node over its transport and pip installs from
them. With a wheelhouse pip also takes Ray and every dependency from it (`--no-index`), for nodes
without internet; without one, a plugin installed here from an index is fetched by the node's pip
at the same version.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from grid_core.cluster import DEFAULT_VENV, on_node
from grid_core.errors import GridError
from grid_core.types import CommandResult, NodeOutcome, Progress
from grid_plugin_ray_backend import layout

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import ClusterConfig, NodeConfig

PIP_TIMEOUT = 1800.0


def wanted() -> dict[str, str]:
    """Distribution -> version every node must have: ray, grid-core and the grid plugins here."""
    names = {"ray", "grid-core"} | {ep.dist.name for ep in metadata.entry_points(group="grid") if ep.dist}
    out = {}
    for name in sorted(names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _has_wheel(directory: Path, dist: str, version: str) -> bool:
    """Whether a wheel `{dist}-{version}-...whl` is there (names compared as PEP 503 does)."""
    for path in directory.glob("*.whl"):
        parts = path.name.split("-")
        if len(parts) >= 5 and _norm(parts[0]) == _norm(dist) and parts[1] == version:
            return True
    return False


def source_tree(dist: str) -> str | None:
    """The local source directory a distribution was installed from (PEP 610), if any."""
    # Several may be found (an .egg-info in the working directory shadows the installed one).
    for found in metadata.distributions(name=dist):
        text = found.read_text("direct_url.json")
        if not text:
            continue
        parsed = urlparse(json.loads(text).get("url", ""))
        path = unquote(parsed.path)
        if parsed.scheme == "file" and os.path.isdir(path):
            return path
    return None


def source_wheel(dist: str) -> Path | None:
    """The wheel file a distribution was installed from (PEP 610), if it is still there."""
    for found in metadata.distributions(name=dist):
        text = found.read_text("direct_url.json")
        parsed = urlparse(json.loads(text).get("url", "")) if text else None
        if parsed is not None and parsed.scheme == "file" and parsed.path.endswith(".whl"):
            path = Path(unquote(parsed.path))
            if path.is_file():
                return path
    return None


def _dist_of(wheel: Path) -> str:
    return _norm(wheel.name.split("-", 1)[0])


def build_grid_wheels(target: Path, versions: dict[str, str], wheelhouse: Path | None,
                      only: set[str] | None = None) -> list[Path]:
    """The wheels to copy: grid's distributions (or those in `only`) built fresh from their source
    trees (a wheel of the same version in the wheelhouse may hold older code), else the wheel file
    one was installed from, else taken from the wheelhouse; plus, with a wheelhouse, everything
    else in it. Without a wheelhouse, one with none of these is left to the node's pip and index."""
    import shutil

    grid_dists = [d for d in versions if d != "ray" and (only is None or d in only)]
    trees = {d: source_tree(d) for d in grid_dists}
    files = {d: source_wheel(d) for d in grid_dists if trees[d] is None}
    lost = [d for d in grid_dists if trees[d] is None and files.get(d) is None
            and not (wheelhouse and _has_wheel(wheelhouse, d, versions[d]))]
    if lost and wheelhouse:
        raise GridError(f"no wheel of {', '.join(lost)} in {wheelhouse} and no source tree to build one from; "
                        "put its wheel in the wheelhouse")
    built = [tree for tree in trees.values() if tree]
    if built:
        _pip_wheel(built, target, wheelhouse)
    for wheel in files.values():
        if wheel is not None:
            shutil.copy(wheel, target / wheel.name)
    fresh = sorted(target.glob("*.whl"))
    shadowed = {_dist_of(w) for w in fresh}
    kept = [w for w in sorted(wheelhouse.glob("*.whl")) if _dist_of(w) not in shadowed] if wheelhouse else []
    return fresh + kept


# grid's pyproject files use PEP 639's `license = "MIT"`, which setuptools reads from 77 on.
SETUPTOOLS_NEEDED = (77,)


def _setuptools_here() -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in metadata.version("setuptools").split(".")[:2] if p.isdigit())
    except metadata.PackageNotFoundError:  # Python 3.12's venvs have none
        return None


def _pip_wheel(trees: list[str], target: Path, wheelhouse: Path | None) -> None:
    """Build wheels of the source trees with this environment's setuptools when it is new enough
    (no network), else in pip's isolated build environment (a current setuptools from the index,
    or from the wheelhouse)."""
    have = _setuptools_here()
    isolated = have is None or have < SETUPTOOLS_NEEDED
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(target),
            *([] if isolated else ["--no-build-isolation"]),
            *(["--find-links", str(wheelhouse)] if isolated and wheelhouse else []), *trees]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        found = "no setuptools" if have is None else f"setuptools {'.'.join(map(str, have))}"
        hint = (f"; this environment has {found} and pip could not fetch a newer one: run "
                f"`{sys.executable} -m pip install 'setuptools>=77'`, or put a setuptools wheel in the "
                "wheelhouse" if isolated else "")
        raise GridError(f"building grid's wheels failed: {result.stderr.strip()[-400:]}{hint}")


class Installer:
    """One install run: the wheels prepared here (once, by the first node that needs them), then
    each node brought to match."""

    def __init__(self, config: ClusterConfig, cluster: Cluster, wheelhouse: str | None, extra: Sequence[str],
                 progress: Progress) -> None:
        self.config, self.cluster, self.extra, self.progress = config, cluster, list(extra), progress
        self.versions = wanted()
        self.wheelhouse = Path(wheelhouse).expanduser() if wheelhouse is not None else None
        if self.wheelhouse is not None and not _has_wheel(self.wheelhouse, "ray", self.versions["ray"]):
            raise GridError(f"{self.wheelhouse} has no wheel of ray {self.versions['ray']}; fill it with: "
                            f"pip download -d {self.wheelhouse} ray=={self.versions['ray']} and grid's dependencies")
        self._tmp = tempfile.TemporaryDirectory(prefix="grid-wheels-")
        self._built: set[str] = set()  # distributions whose wheels are in the temporary directory
        self._wheels: list[Path] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        self._tmp.cleanup()

    def wheels(self, node: NodeConfig, needed: set[str]) -> list[Path]:
        """The wheels for a node that lacks `needed`: each distribution's built once, by the
        first node that needs it."""
        with self._lock:
            missing = needed - self._built
            if missing or not self._built:
                self.progress(node.name, f"building wheels of {', '.join(sorted(missing)) or 'nothing'} here")
                self._wheels = build_grid_wheels(Path(self._tmp.name), self.versions, self.wheelhouse, missing)
                self._built |= missing
            return self._wheels

    def venv(self, node: NodeConfig) -> str:
        return on_node(node, self.config.backend.venv or DEFAULT_VENV)

    def run(self, node: NodeConfig, argv: Sequence[str], timeout: float = 300.0) -> CommandResult:
        return self.cluster.transport(node).run(argv, timeout=timeout)

    def current(self, node: NodeConfig, python: str) -> dict[str, str | None] | None:
        """The versions in the node's venv, or None when it has no venv yet."""
        names = [*self.versions, *(_requirement_name(x) for x in self.extra)]
        result = self.run(node, [python, "-c", layout.onnode_source(), "probe", "/nonexistent", *names], timeout=60)
        if result.exit_status == 127 or "No such file or directory" in result.stderr:
            return None
        if result.exit_status != 0:
            raise GridError(f"{python} failed: {result.stderr.strip()[-300:]}")
        versions: dict[str, str | None] = json.loads(result.stdout.strip().splitlines()[-1])["versions"]
        return versions

    def install(self, node: NodeConfig) -> tuple[str, str]:
        if node.python:
            return "skipped", f"nodes[{node.name}].python is set; grid uses that interpreter as it is"
        venv = self.venv(node)
        python = posixpath.join(venv, "bin", "python")
        if node.transport_name == "local" and os.path.realpath(python) == os.path.realpath(sys.executable):
            return "up to date", "this machine's own environment"
        have = self.current(node, python)
        if have is not None and self._matches(have):
            return "up to date", f"ray {self.versions['ray']} in {venv}"
        directory = posixpath.join(layout.node_dir(self.config, node), "wheels")
        needed = {d for d, v in self.versions.items() if have is None or have.get(d) != v}
        self._copy_wheels(node, directory, needed)
        self.progress(node.name, f"pip install into {venv}")
        pins = [f"{d}=={v}" for d, v in self.versions.items()]
        # --no-compile: compiling all of Ray at install took 5 s of 8 here; Python compiles only
        # what a node imports, when it first does, into this venv of the cluster's account.
        pip = [python, "-m", "pip", "install", "--quiet", "--no-compile", "--disable-pip-version-check",
               "--find-links", directory, *(["--no-index"] if self.wheelhouse else []), *pins, *self.extra]
        # Made and filled under one lock beside the venv: nodes sharing a home take turns, and pip
        # finds the later ones' requirements already met.
        base = self.config.backend.python or "python3"
        script = '[ -x "$1/bin/python" ] || "$2" -m venv "$1" || exit 3; shift 2; exec "$@"'
        argv = [base, "-c", layout.onnode_source(), "locked", f"{venv.rstrip('/')}.lock", "sh", "-c", script, "sh",
                venv, base, *pip]
        result = self.run(node, argv, timeout=PIP_TIMEOUT)
        self.run(node, ["rm", "-rf", directory], timeout=60)
        if result.exit_status == 3:
            raise GridError(f"cannot create {venv} with {base}: {result.stderr.strip()[-300:]}")
        if result.exit_status != 0:
            raise GridError(f"pip install failed: {result.stderr.strip()[-500:]}")
        have = self.current(node, python)
        if have is None or not self._matches(have):
            raise GridError(f"after pip install {venv} still differs: {have}")
        return "installed", f"ray {self.versions['ray']} in {venv}"

    def _matches(self, have: dict[str, str | None]) -> bool:
        return all(have.get(d) == v for d, v in self.versions.items()) and all(
            have.get(_requirement_name(x)) for x in self.extra)

    def _copy_wheels(self, node: NodeConfig, directory: str, needed: set[str]) -> None:
        files = self.wheels(node, needed)
        transport = self.cluster.transport(node)
        layout.make_private(transport, posixpath.dirname(directory), directory)
        size = sum(w.stat().st_size for w in files) / 2**20
        self.progress(node.name, f"copying {len(files)} wheels ({size:.0f} MiB)")
        for wheel in files:
            transport.put(str(wheel), posixpath.join(directory, wheel.name))


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]


def install(config: ClusterConfig, cluster: Cluster, nodes: Sequence[NodeConfig], *, wheelhouse: str | None,
            extra: Sequence[str], progress: Progress) -> list[NodeOutcome]:
    """Bring each node's venv to this machine's versions, all nodes at once."""
    installer = Installer(config, cluster, wheelhouse, extra, progress)
    try:
        for node in nodes:
            progress(node.name, "checking")
        results = {r.node.name: r for r in cluster.fan_out(nodes, installer.install)}
    finally:
        installer.close()
    out = []
    for node in nodes:
        r = results[node.name]
        if r.error is not None:
            out.append(NodeOutcome(node.name, False, "failed", r.error, r.seconds))
        else:
            action, detail = r.value
            out.append(NodeOutcome(node.name, True, action, detail, r.seconds))
    return out
