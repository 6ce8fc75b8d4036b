"""The plugin index behind fast start-up: used while current, rebuilt after any install or edit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grid_core import plugins
from grid_core.errors import PluginError
from grid_core.plugins import PluginHost
from tests.conftest import grid
from tests.test_plugins import HELLO_PLUGIN, _package


def _index_files() -> list[Path]:
    return sorted(Path(os.environ["GRID_STATE_DIR"]).glob("plugin-index-*.json"))


def test_a_full_load_writes_the_index_and_the_next_host_uses_it_without_loading() -> None:
    first = PluginHost(indexed=True)
    assert first._entries is not None and len(_index_files()) == 1
    second = PluginHost(indexed=True)
    assert second._entries is None  # nothing imported or registered
    assert [r.as_dict() for r in second.records.values()] == [r.as_dict() for r in first.records.values()]
    assert second.commands() == first.commands() and "plugins" in second.commands()
    # Asking for one registration imports the one plugin the index names for it, nothing else ...
    assert second.get("grid_transports", "local").name == "local" and second._entries is None
    # ... and asking for a kind, or for a name the index does not have, loads for real.
    assert "local" in second.all("grid_transports") and second._entries is not None
    third = PluginHost(indexed=True)
    with pytest.raises(PluginError, match="no transport named 'nope'"):
        third.get("grid_transports", "nope")
    assert third._entries is not None


def test_blocking_and_no_plugins_apply_to_what_the_index_holds() -> None:
    PluginHost(indexed=True)
    blocked = PluginHost(indexed=True, disabled={"commands"})
    assert blocked._entries is None
    assert blocked.records["commands"].status == "blocked" and blocked.records["commands"].hooks == {}
    assert "plugins" not in blocked.commands()
    only_builtins = PluginHost(indexed=True, no_plugins=True)
    assert only_builtins._entries is None
    assert set(only_builtins.records) == set(plugins.BUILTINS)
    # Unblocking needs what the blocked plugin registers: a host built while it was blocked cannot say.
    for path in _index_files():
        path.unlink()
    PluginHost(indexed=True, disabled={"commands"})
    unblocked = PluginHost(indexed=True)
    assert unblocked._entries is not None and "plugins" in unblocked.commands()


def test_a_new_distribution_on_the_path_invalidates_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    PluginHost(indexed=True)
    before = plugins._read_index()
    assert before is not None
    metadata = tmp_path / "grid_plugin_new.egg-info"
    metadata.mkdir()  # an install
    assert plugins._read_index() is None
    PluginHost(indexed=True)
    assert plugins._read_index() is not None
    (metadata / "entry_points.txt").write_text("[grid]\nnew = grid_plugin_new\n")  # rewritten in place
    assert plugins._read_index() is None
    (metadata / "entry_points.txt").unlink()
    metadata.rmdir()  # an uninstall: back to the state the first index was built for
    assert plugins._read_index() == before


def test_an_edited_plugin_module_invalidates_the_index() -> None:
    PluginHost(indexed=True)
    index = plugins._read_index()
    assert index is not None
    module = next(path for path, _mtime in index["files"] if path.endswith("builtin/commands.py"))
    stat = os.stat(module)
    try:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        assert plugins._read_index() is None
    finally:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"format": 1}', '{"format": 1, "key": 3}'])
def test_a_corrupt_index_is_ignored_and_replaced(content: str) -> None:
    PluginHost(indexed=True)
    (path,) = _index_files()
    path.write_text(content)
    host = PluginHost(indexed=True)
    assert host._entries is not None and "plugins" in host.commands()
    assert json.loads(path.read_text())["format"] == plugins.INDEX_FORMAT


def test_a_failed_plugin_stays_in_the_index_while_the_files_it_ran_are_unchanged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure is a fact of the files, as a success is: the index keeps it, and editing the
    failing module (a fix made in place) makes the next host load again."""
    package = tmp_path / "grid_flaky"
    package.mkdir()
    (package / "__init__.py").write_text("from grid_flaky import inner\n")
    (package / "inner.py").write_text("raise RuntimeError('not today')\n")
    metadata = tmp_path / "grid_flaky-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: grid-flaky\nVersion: 1.0\n")
    (metadata / "entry_points.txt").write_text("[grid]\nflaky = grid_flaky\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = PluginHost(indexed=True)
    assert first.records["flaky"].status == "failed" and "not today" in first.records["flaky"].reason
    second = PluginHost(indexed=True)
    assert second._entries is None and "grid_flaky" not in sys.modules
    assert second.records["flaky"].status == "failed" and "not today" in second.records["flaky"].reason
    inner = package / "inner.py"
    stat = os.stat(inner)
    os.utime(inner, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert PluginHost(indexed=True)._entries is not None


def _requires(tmp_path: Path, requirement: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plugin requiring `requirement`, which leaves a marker file when it is imported."""
    marker = tmp_path / "imported"
    (tmp_path / "grid_old.py").write_text(f"open({str(marker)!r}, 'a').write('x')\n")
    metadata = tmp_path / "grid_old-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: grid-old\nVersion: 1.0\n"
                                       f"Requires-Dist: {requirement}\nRequires-Dist: pytest; extra == 'test'\n")
    (metadata / "entry_points.txt").write_text("[grid]\nold = grid_old\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def test_a_plugin_whose_requirement_excludes_this_core_is_incompatible_and_never_imported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = _requires(tmp_path, "grid-core<0.1", monkeypatch)
    host = PluginHost(indexed=True)
    old = host.records["old"]
    assert (old.status, old.reason) == ("incompatible", "requires grid-core<0.1, this is grid-core 0.1.0")
    assert not marker.exists() and "grid_old" not in sys.modules
    assert PluginHost(indexed=True).records["old"].status == "incompatible"  # from the index
    with pytest.raises(PluginError, match=r"old \(incompatible: requires grid-core<0\.1"):
        host.get("grid_offload_policies", "old")


def test_a_plugin_whose_requirement_admits_this_core_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = _requires(tmp_path, "grid_core (>=0.1,<1)", monkeypatch)
    assert PluginHost().records["old"].status == "active" and marker.exists()


def test_an_unwritable_state_dir_costs_only_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GRID_STATE_DIR", str(blocker / "state"))  # below a file: cannot be made
    host = PluginHost(indexed=True)
    assert "plugins" in host.commands()


# --------------------------------------------------------------------------- real pip install / uninstall


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, capture_output=True, timeout=300)


def test_installing_and_removing_a_plugin_shows_at_once(tmp_path: Path) -> None:
    """Into this very environment: the index built before the install must not hide the plugin."""
    dist, module = "grid-plugin-startup-probe", "grid_startup_probe"
    source = HELLO_PLUGIN.replace("grid_hello", module).replace('name="hello"', 'name="startup-probe"')
    source = source.replace('name="first-node"', 'name="startup-probe-first"')
    pkg = _package(tmp_path, dist, module, "startup-probe", source)
    before = grid("--help")
    assert before.returncode == 0 and "startup-probe" not in before.stdout
    assert _index_files()
    try:
        _pip("install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(pkg))
        helped = grid("--help")
        assert "startup-probe" in helped.stdout and "Greet someone." in helped.stdout
        listed = {p["name"]: p for p in json.loads(grid("plugins", "list", "--json").stdout)}
        assert listed["startup-probe"]["status"] == "active"
        assert listed["startup-probe"]["hooks"]["grid_commands"] == ["startup-probe"]
        assert grid("startup-probe", "you").stdout == "hello you\n"
        assert "startup-probe" in grid("--help").stdout  # from the rebuilt index
    finally:
        _pip("uninstall", "-y", "-q", dist)
    after = grid("--help")
    assert after.returncode == 0 and "startup-probe" not in after.stdout
    assert "startup-probe" not in {p["name"] for p in json.loads(grid("plugins", "list", "--json").stdout)}
    gone = grid("startup-probe", "you")
    assert gone.returncode != 0 and "No such command" in gone.stderr


def test_threads_that_ask_at_once_all_see_the_full_load() -> None:
    """`cluster status` reads the engine and samples the nodes from two threads of one host: the
    first to ask loads every plugin, and the others wait for it rather than see half of them."""
    from concurrent.futures import ThreadPoolExecutor

    PluginHost(indexed=True)  # writes the index
    for _ in range(5):
        host = PluginHost(indexed=True)
        assert host._entries is None
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = list(pool.map(lambda _, h=host: sorted(h.all("grid_transports")), range(8)))
        assert all(names == found[0] and "local" in names for names in found), found


# --------------------------------------------------------------------------- pip-installed, through the CLI

MARKED = "import os\nopen(os.environ['GRID_TEST_MARKER'], 'a').write({name!r} + '\\n')\n{rest}"


def _pip_package(root: Path, dist: str, module: str, source: str, dependencies: list[str]) -> Path:
    pkg = root / dist
    (pkg / module).mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=70.1"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{dist}"\nversion = "2.0"\ndependencies = {json.dumps(dependencies)}\n'
        f'[project.entry-points.grid]\n{module.removeprefix("grid_")} = "{module}"\n')
    (pkg / module / "__init__.py").write_text(source)
    return pkg


def test_a_broken_plugin_is_imported_once_and_an_incompatible_one_never(tmp_path: Path) -> None:
    """pip-installed into a venv of their own: one raising at import, one requiring grid-core<0.1.
    Each writes a marker line when imported; `grid --help` twice imports the broken one once."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "grid-parent.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    broken = _pip_package(tmp_path, "grid-plugin-crash", "grid_crash",
                          MARKED.format(name="crash", rest="raise RuntimeError('crashes at import')\n"), [])
    ancient = _pip_package(tmp_path, "grid-plugin-ancient", "grid_ancient", MARKED.format(name="ancient", rest=""),
                           ["grid-core<0.1"])
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", str(broken), str(ancient)], check=True, capture_output=True)
    marker = tmp_path / "imported"
    env = {"GRID_TEST_MARKER": str(marker)}
    for _ in range(2):
        helped = grid("--help", python=str(python), env=env)
        assert helped.returncode == 0 and "Traceback" not in helped.stderr, helped.stderr
    assert marker.read_text() == "crash\n"  # the second run took the failure from the index
    listed = {p["name"]: p for p in json.loads(grid("plugins", "list", "--json", python=str(python), env=env).stdout)}
    assert listed["crash"]["status"] == "failed" and "crashes at import" in listed["crash"]["reason"]
    assert listed["ancient"]["status"] == "incompatible"
    assert listed["ancient"]["reason"] == "requires grid-core<0.1, this is grid-core 0.1.0"
    table = grid("plugins", "list", python=str(python), env=env)
    assert "incompatible" in table.stdout and "requires grid-core<0.1" in table.stdout
    assert marker.read_text() == "crash\n"  # the list came from the index; `ancient` never ran
