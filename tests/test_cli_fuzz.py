"""Every command, every option and argument, odd values: a result or one clear error, never exit 70.

Commands and their parameters come from walking the click tree from the root group, so a command
a plugin adds is covered without touching this file. Each input runs through `grid_core.cli.main`
(the console entry point, which maps exceptions to exit statuses) in this process. The config's
only node is an SSH node on a closed loopback port, no cluster is recorded in the isolated state
directory, and the backend's start/stop/install and the local transport are stubbed, so that no
input (not even a config that `config init` wrote under a fuzzed name) can start Ray, install
packages or run a command on this machine. A sample of the same inputs runs through the real
`grid` executable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_core import plugins as plugin_host
from grid_core.cli import cli, main
from grid_core.errors import GridError
from grid_core.types import TransportError

GRID_EXE = Path(sys.executable).with_name("grid")
NON_UTF8 = b"\xff\xfe-\xc3(".decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes
ODD = ["nan", "NaN", "inf", "-inf", "+inf", "1e400", "-1e400", "-1", "-5", "0", "-0", "1e-320",
       "99999999999999999999", "-99999999999999999999", str(2**63), "0x10", "1_000",
       "", " ", "\t", "[/]", "[bold]", "[red]x[/red]", "[gpu1]:2222", "[link=file:///etc/passwd]x[/link]",
       "$(id)", "`id`", "; true", "&& false", "|", "*", ">out", "'", '"', "\\", "%s%n", "{}", "-", "--x",
       "../../x", "a\nb", "\r", "é", "🙂", NON_UTF8, "x" * 3000]
GOOD = ["1", "2", "0.5", "far", "cpu", "memory", "30m", "90s", "2G", "512M", "abc123", "x"]
FREE_TEXT = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), max_size=12)
SKIP_OPTIONS = {"help", "config", "version"}  # -c is fuzzed only as a value that names no file
EXAMPLES_PER_COMMAND = 60
SAMPLE_THROUGH_EXE = 24


def commands() -> list[tuple[tuple[str, ...], click.Command]]:
    """(path, command) for every leaf command under the root group."""
    found: list[tuple[tuple[str, ...], click.Command]] = []

    def walk(group: click.Group, path: tuple[str, ...]) -> None:
        ctx = click.Context(group, info_name=path[-1] if path else "grid")
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, name
            if isinstance(command, click.Group):
                walk(command, (*path, name))
            else:
                found.append(((*path, name), command))

    walk(cli, ())
    return found


COMMANDS = commands()


def values_for(param: click.Parameter) -> st.SearchStrategy[str]:
    pool = ODD + GOOD
    if isinstance(param.type, click.Choice):
        pool = [str(c) for c in param.type.choices] * 3 + pool
    return st.sampled_from(pool) | FREE_TEXT


@st.composite
def argv_for(draw: st.DrawFn, path: tuple[str, ...], command: click.Command) -> list[str]:
    """Some of the command's options (odd values, flags or not) and its arguments, in click's syntax."""
    options: list[str] = []
    positional: list[str] = []
    trailing: list[str] = []
    for param in command.params:
        if param.name in SKIP_OPTIONS:
            continue
        if isinstance(param, click.Option):
            if not draw(st.booleans()):
                continue
            flag = draw(st.sampled_from(param.opts + param.secondary_opts))
            if param.is_flag or param.count:
                options.append(flag)
                continue
            for _ in range(draw(st.integers(1, 2)) if param.multiple else 1):
                options += [flag, *(draw(values_for(param)) for _ in range(max(param.nargs, 1)))]
        elif isinstance(param, click.Argument):
            if not param.required and not draw(st.booleans()):
                continue
            if param.nargs == -1:
                trailing = draw(st.lists(values_for(param), min_size=1, max_size=3))
            else:
                positional += [draw(values_for(param)) for _ in range(param.nargs)]
    # "--" keeps a value such as "-5" an argument, as a user would write it
    return [*path, *options, "--", *positional, *trailing] if positional or trailing else [*path, *options]


def problem(argv: list[str], code: int, out: str, err: str) -> str | None:
    """None when the command worked (any status it documents) or failed with a clear message;
    else what went wrong. Never 70, never a traceback."""
    if code == 70 or "Traceback" in out + err:
        return (err.strip().splitlines() or [f"exit {code}"])[0][:300]
    per_node = argv[0] in ("exec", "doctor") and ("── " in out or "nodes ready" in out or out.startswith("["))
    if code in (1, 2) and not per_node:  # exec and doctor report each node's failure on stdout instead
        lines = [line for line in err.splitlines() if line.strip()]
        if not lines or not (lines[0].startswith(("error: ", "Usage: ")) or lines[-1].startswith("Error: ")):
            return f"exit {code} without a message: {err[:300]!r}"
    return None


class Findings:
    """Problems by command and message (one example each), so one run shows all of them."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], list[str]] = {}

    def check(self, argv: list[str], code: int, out: str, err: str) -> None:
        what = problem(argv, code, out, err)
        if what is not None:
            path = " ".join(a for a in argv[:2] if not a.startswith("-"))
            self.found.setdefault((path, what), [a if len(a) < 60 else a[:20] + f"...({len(a)} chars)" for a in argv])

    def report(self) -> str:
        return "\n".join(f"grid {argv!r}: {what}" for (_, what), argv in sorted(self.found.items()))


@pytest.fixture
def fuzz_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    config = tmp_path / "closed.toml"
    config.write_text('name = "fuzz"\n[[nodes]]\nname = "far"\nhost = "127.0.0.1"\nport = 1\ntransport = "ssh"\n'
                      'role = "head"\nconnect_timeout = 0.2\ncommand_timeout = 1\n')
    monkeypatch.setenv("GRID_CONFIG", str(config))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise GridError("not run by the fuzz")

    def no_local(*_args: object, **_kwargs: object) -> None:
        raise TransportError("local commands are not run by the fuzz")

    from grid_core.builtin.local import LocalTransport
    from grid_plugin_ray_backend.backend import RayBackend

    for name in ("start", "stop", "install"):
        monkeypatch.setattr(RayBackend, name, refuse)
    from grid_core import boot_unit  # `cluster enable` writes its unit here, and tells no systemd

    monkeypatch.setattr(boot_unit, "unit_directory", lambda _user: tmp_path / "units")
    monkeypatch.setattr(boot_unit, "systemctl", lambda _user, *_args: "systemctl is not run by the fuzz")
    monkeypatch.setattr("grid_core.cli.plugins._pip_here", refuse)  # plugins install and remove
    monkeypatch.setattr(LocalTransport, "run", no_local)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield config
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    plugin_host.configure(no_plugins=False)


def invoke(argv: list[str]) -> tuple[int, str, str]:
    """argv through the console entry point, its streams captured: (exit status, stdout, stderr)."""
    runner = CliRunner()
    with runner.isolation() as (out, err, _), _argv(["grid", *argv]):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
        return code, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace")


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    saved, sys.argv = sys.argv, argv
    try:
        yield
    finally:
        sys.argv = saved


def test_the_tree_walk_finds_every_command() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"exec", "run", "doctor", "offload move", "offload scan", "offload watch", "boost request", "jobs list",
            "cluster status", "cluster start", "config init", "plugins list"} <= names


def test_every_command_survives_odd_values(fuzz_env: Path) -> None:
    tried: list[list[str]] = []
    findings = Findings()
    began = time.monotonic()
    # First every single odd value in every parameter of every command, one at a time ...
    for path, command in COMMANDS:
        for param in command.params:
            if param.name in SKIP_OPTIONS or (isinstance(param, click.Option) and (param.is_flag or param.count)):
                continue
            for value in ODD:
                if isinstance(param, click.Option):
                    argv = [*path, param.opts[0], value, *_required_arguments(command)]
                else:
                    argv = [*path, "--", *(value if p is param else "x" for p in command.params
                                           if isinstance(p, click.Argument) and (p.required or p is param))]
                findings.check(argv, *invoke(argv))
                tried.append(argv)

    # ... then random combinations of options, flags and arguments per command.
    for path, command in COMMANDS:
        @settings(max_examples=EXAMPLES_PER_COMMAND, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(argv_for(path, command))
        def combination(argv: list[str]) -> None:
            findings.check(argv, *invoke(argv))
            tried.append(argv)

        combination()

    seconds = time.monotonic() - began
    print(f"\nfuzz: {len(tried)} inputs over {len(COMMANDS)} commands in {seconds:.1f} s", file=sys.stderr)
    assert seconds < 60, f"the fuzz took {seconds:.0f} s"  # a stub that stopped working would show here

    # A sample through `grid` itself: real argv bytes and streams, but none of the stubs above, so
    # of the cluster's life only `status` is in it (start, stop, install and what comes may act), and
    # of the plugins' only `list` (install and remove run pip here).
    safe = [argv for argv in tried if (argv[0] != "cluster" or argv[1] == "status")
            and (argv[0] != "plugins" or argv[1] == "list")]
    for argv in random.Random(12).sample(safe, SAMPLE_THROUGH_EXE):
        result = subprocess.run([os.fsencode(GRID_EXE), *map(os.fsencode, argv)], capture_output=True, timeout=60)
        findings.check(argv, result.returncode, result.stdout.decode(errors="replace"),
                       result.stderr.decode(errors="replace"))
    print(f"fuzz: {SAMPLE_THROUGH_EXE} of them again through {GRID_EXE}", file=sys.stderr)
    assert not findings.found, f"{len(findings.found)} kinds of failure:\n{findings.report()}"


def _required_arguments(command: click.Command) -> list[str]:
    needed = [p for p in command.params if isinstance(p, click.Argument) and p.required]
    return ["--", *("1" for _ in needed)] if needed else []
