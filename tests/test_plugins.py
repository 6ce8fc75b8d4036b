"""The plugin manager: loading, failures, block-lists, clashes; and real installed plugins."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from grid_core.errors import PluginError
from grid_core.hookspecs import hookimpl
from grid_core.plugins import PluginHost
from grid_core.types import GridScheduler, GridTransport
from tests.conftest import grid


def test_builtins_register_through_the_hooks() -> None:
    host = PluginHost(no_plugins=True)
    assert set(host.all("grid_transports")) == {"local"}
    assert "least-loaded" in host.all("grid_schedulers")
    assert "psutil" in host.all("grid_metrics_sources")
    assert {"plugins", "config", "exec", "cluster"} <= set(host.all("grid_commands"))
    assert all(r.status == "active" and r.distribution == "grid-core" for r in host.records.values())


def test_every_hook_is_documented_with_an_example() -> None:
    from grid_core import hookspecs
    from grid_core.plugins import KINDS

    for hook in KINDS:
        doc = getattr(hookspecs, hook).__doc__
        assert doc and "Example::" in doc and "@hookimpl" in doc, hook


class TwoSchedulers:
    @hookimpl
    def grid_schedulers(self):  # type: ignore[no-untyped-def]
        yield GridScheduler(name="least-loaded", summary="a clash", factory=object)  # type: ignore[arg-type]


def test_a_name_registered_twice_names_both_providers() -> None:
    host = PluginHost(no_plugins=True)
    host.add(TwoSchedulers(), "clasher", distribution="grid-plugin-clash", version="9.9")
    with pytest.raises(PluginError) as err:
        host.get("grid_schedulers", "least-loaded")
    message = str(err.value)
    assert "'least-loaded'" in message and "grid-plugin-clash 9.9" in message and "grid-core" in message
    assert host.conflicts() and "clasher" in host.conflicts()[0]
    # Other kinds are unaffected.
    assert host.get("grid_transports", "local").name == "local"


class Typo:
    @hookimpl
    def grid_transport(self):  # type: ignore[no-untyped-def]  # missing "s": not a hook
        return []


def test_an_unknown_hook_fails_that_plugin_only() -> None:
    host = PluginHost(no_plugins=True)
    record = host.add(Typo(), "typo")
    assert record.status == "failed" and "grid_transport" in record.reason
    assert host.get("grid_transports", "local")


class BrokenRegistration:
    @hookimpl
    def grid_transports(self):  # type: ignore[no-untyped-def]
        yield GridTransport(name="good", summary="ok", factory=object)  # type: ignore[arg-type]
        raise RuntimeError("boom while registering")


class WrongType:
    @hookimpl
    def grid_transports(self):  # type: ignore[no-untyped-def]
        yield "not a registration"


@pytest.mark.parametrize(
    ("plugin", "reason"), [(BrokenRegistration(), "boom while registering"), (WrongType(), "expected a GridTransport")]
)
def test_a_plugin_that_fails_to_register_is_recorded_and_leaves_nothing(plugin: object, reason: str) -> None:
    host = PluginHost(no_plugins=True)
    record = host.add(plugin, "bad")
    assert record.status == "failed" and reason in record.reason
    assert set(host.all("grid_transports")) == {"local"}
    assert record.hooks == {}


def test_blocked_builtins_are_listed_as_blocked() -> None:
    host = PluginHost(no_plugins=True, disabled={"least-loaded"})
    assert host.records["least-loaded"].status == "blocked"
    with pytest.raises(PluginError, match=r"no scheduler named 'least-loaded'.*least-loaded \(blocked\)"):
        host.get("grid_schedulers", "least-loaded")


def test_registration_names_are_validated() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        GridTransport(name="Bad Name", summary="x", factory=object)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- real installed packages

HELLO_PLUGIN = '''
from grid_core.hookspecs import hookimpl
from grid_core.types import GridCommand, GridScheduler
import click


class FirstNode:
    def choose(self, request, nodes):
        return nodes[0] if nodes else None


@hookimpl
def grid_commands():
    yield GridCommand(name="hello", summary="Greet someone.", import_path="grid_hello:hello")


@hookimpl
def grid_schedulers():
    yield GridScheduler(name="first-node", summary="always the first node", factory=FirstNode)


@click.command()
@click.argument("who")
def hello(who):
    """Greet WHO."""
    click.echo(f"hello {who}")
'''

BROKEN_PLUGIN = "import a_module_that_does_not_exist\n"


def _package(root: Path, dist: str, module: str, ep_name: str, source: str) -> Path:
    pkg = root / dist
    (pkg / module).mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(
        textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=70.1"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "1.2.3"
        [project.entry-points.grid]
        {ep_name} = "{module}"
        ''')
    )
    (pkg / module / "__init__.py").write_text(source)
    return pkg


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv that sees grid and its dependencies, with two third-party plugins pip-installed."""
    root = tmp_path_factory.mktemp("thirdparty")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The child venv sees the dev environment (grid-core and its dependencies) but not the reverse.
    parent = sysconfig.get_paths()["purelib"]
    Path(purelib, "grid-parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    for dist, module, ep, source in [
        ("grid-plugin-hello", "grid_hello", "hello", HELLO_PLUGIN),
        ("grid-plugin-broken", "grid_broken", "broken", BROKEN_PLUGIN),
    ]:
        pkg = _package(root, dist, module, ep, source)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(python),
                "install",
                "-q",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                str(pkg),
            ],
            check=True,
            capture_output=True,
        )
    return python


def test_a_pip_installed_plugin_is_listed_and_its_command_works(plugin_venv: Path) -> None:
    listed = grid("plugins", "list", "--json", python=str(plugin_venv))
    assert listed.returncode == 0, listed.stderr
    by_name = {p["name"]: p for p in json.loads(listed.stdout)}
    hello = by_name["hello"]
    assert (hello["status"], hello["version"], hello["distribution"]) == ("active", "1.2.3", "grid-plugin-hello")
    assert hello["hooks"] == {"grid_commands": ["hello"], "grid_schedulers": ["first-node"]}
    ran = grid("hello", "world", python=str(plugin_venv))
    assert (ran.returncode, ran.stdout) == (0, "hello world\n")
    assert "Greet someone." in grid("--help", python=str(plugin_venv)).stdout
    # The dev environment itself does not see it: the plugin came from that venv alone.
    assert "hello" not in {p["name"] for p in json.loads(grid("plugins", "list", "--json").stdout)}


def test_a_broken_plugin_is_failed_and_everything_else_works(plugin_venv: Path) -> None:
    listed = grid("plugins", "list", "--json", python=str(plugin_venv))
    broken = {p["name"]: p for p in json.loads(listed.stdout)}["broken"]
    assert broken["status"] == "failed"
    assert "ModuleNotFoundError" in broken["reason"] and "a_module_that_does_not_exist" in broken["reason"]
    helped = grid("--help", python=str(plugin_venv))
    assert helped.returncode == 0 and "plugins" in helped.stdout and "Traceback" not in helped.stderr
    ran = grid("exec", "--", "echo", "still works", python=str(plugin_venv))
    assert ran.returncode == 0 and "still works" in ran.stdout
    table = grid("plugins", "list", python=str(plugin_venv)).stdout
    assert "broken" in table and "failed" in table


def test_disabling_a_plugin_by_environment(plugin_venv: Path) -> None:
    listed = grid("plugins", "list", "--json", python=str(plugin_venv), env={"GRID_DISABLE_PLUGINS": "hello,broken"})
    by_name = {p["name"]: p for p in json.loads(listed.stdout)}
    assert by_name["hello"]["status"] == by_name["broken"]["status"] == "blocked"
    gone = grid("hello", "world", python=str(plugin_venv), env={"GRID_DISABLE_PLUGINS": "hello"})
    assert gone.returncode != 0 and "No such command 'hello'" in gone.stderr


def test_no_plugins_switch_loads_only_builtins(plugin_venv: Path) -> None:
    listed = grid("--no-plugins", "plugins", "list", "--json", python=str(plugin_venv))
    assert {p["distribution"] for p in json.loads(listed.stdout)} == {"grid-core"}


def test_the_configured_scheduler_comes_from_a_plugin(plugin_venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "grid.toml"
    config.write_text('[[nodes]]\nname = "a"\ntransport = "local"\n[scheduler]\nname = "first-node"\n')
    shown = grid("config", "show", "--json", "-c", str(config), python=str(plugin_venv))
    assert json.loads(shown.stdout)["scheduler"]["name"] == "first-node"


def test_an_unexpected_error_in_a_plugin_names_it(tmp_path: Path) -> None:
    """A plugin command that raises is reported with the plugin's name and version, no traceback."""
    root = tmp_path / "pkgs"
    source = HELLO_PLUGIN.replace('click.echo(f"hello {who}")', "raise ZeroDivisionError('plugin bug')")
    pkg = _package(root, "grid-plugin-buggy", "grid_buggy", "buggy", source.replace("grid_hello", "grid_buggy"))
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(pkg),
        ],
        check=True,
        capture_output=True,
    )
    ran = grid("hello", "x", env={"PYTHONPATH": str(target)})
    assert ran.returncode == 70
    assert "plugin 'buggy' (grid-plugin-buggy 1.2.3)" in ran.stderr and "plugin bug" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert "Traceback" in grid("--debug", "hello", "x", env={"PYTHONPATH": str(target)}).stderr


def test_plugins_install_and_remove_here_through_the_cli(tmp_path: Path) -> None:
    """Into a venv of its own, whose one local node runs from that same venv: install a plugin from
    its directory, see it here and in the cluster's view, remove it by its plugin name."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "grid-parent.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    config = tmp_path / "grid.toml"
    config.write_text(f'name = "solo"\n[backend]\nvenv = "{venv}"\n[[nodes]]\nname = "here"\ntransport = "local"\n')
    pkg = _package(tmp_path / "src", "grid-plugin-greeter", "grid_greeter", "greeter",
                   HELLO_PLUGIN.replace("grid_hello", "grid_greeter").replace('name="hello"', 'name="greeter"'))
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return grid(*args, python=str(python), env={"GRID_CONFIG": str(config)}, timeout=300)

    installed = run("plugins", "install", str(pkg), "--json")
    assert installed.returncode == 0, installed.stderr
    [node] = json.loads(installed.stdout)["nodes"]
    assert (node["name"], node["ok"], node["action"]) == ("here", True, "up to date")
    assert node["reason"] == "this machine's own environment"
    assert "grid-plugin-greeter absent -> 1.2.3" in installed.stderr
    assert run("greeter", "you").stdout == "hello you\n"
    matrix = json.loads(run("plugins", "list", "--cluster", "--json").stdout)
    row = next(r for r in matrix["plugins"] if r["distribution"] == "grid-plugin-greeter")
    # Its scheduler runs in the service, so it counts on the head (here, the only node).
    assert (row["here"], row["nodes"], row["counts_on"]) == ("1.2.3", {"here": "1.2.3"}, "the head")
    removed = run("plugins", "remove", "greeter")
    assert removed.returncode == 0, removed.stderr
    assert "removed" in removed.stdout and "grid-plugin-greeter 1.2.3 -> removed" in removed.stderr
    assert "greeter" not in run("--help").stdout
    unknown = run("plugins", "remove", "no-such-plugin")
    assert unknown.returncode == 2 and "'no-such-plugin' is not installed here" in unknown.stderr
    assert "Traceback" not in unknown.stderr
