"""The docs say what grid does: every page is reachable from the README, every `grid` command line
in them is one the CLI accepts, and the README's three-machine walkthrough runs, word for word,
on three test hosts.

A docs line shows forms (`[--json]`, `list | logs ID`, `bash|zsh|fish`, `NODE`): the parse check
tries each form it shows, with placeholders given plain values, through the real click parser.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from tests.conftest import REPO
from tests.testbed import Testbed, require_testbed

PAGES = sorted((REPO / "docs").glob("*.md"))
PLACEHOLDERS = {"PID": "4242", "N": "gpu1", "C": "1", "G": "1", "S": "2", "D": "30m", "SIZE": "20G"}


def sh_blocks(path: Path) -> list[str]:
    """Shell blocks, and unlabelled ones: a command shown in a block of no language is checked too."""
    return [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", path.read_text(), re.S) if lang in ("sh", "")]


def grid_lines(path: Path) -> list[str]:
    """Every command of a ```sh block that starts with `grid`, comments and `;` split off."""
    out = []
    for block in sh_blocks(path):
        for line in block.splitlines():
            for command in line.split("#")[0].split(" ; "):
                if command.strip().startswith("grid "):
                    out.append(command.strip())
    return out


def forms(line: str) -> list[list[str]]:
    """The argv forms a docs line shows: optional parts dropped; each ` | ` alternative continues
    the command before it (an option after its command, a subcommand after its group); `a|b|c`
    words tried one by one; shell redirection and fish's `| source` cut."""
    line = re.sub(r"\s*>\s*\S+$", "", line)
    line = re.sub(r"\s*\|\s*source$", "", line)
    head, *alternatives = [part.strip() for part in re.sub(r"\[[^\]]*\]", "", line).split(" | ")]
    words = shlex.split(head)
    command = next((words[:i] for i, w in enumerate(words) if w.startswith("-")), words)
    out = [words] + [[*(command if alt.startswith("-") else words[:-1]), *shlex.split(alt)] for alt in alternatives]
    expanded = []
    for argv in out:
        choices = [w.split("|") if "|" in w and not w.startswith("-") else [w] for w in argv]
        for k in range(max(len(c) for c in choices)):
            expanded.append([PLACEHOLDERS.get(c[min(k, len(c) - 1)], c[min(k, len(c) - 1)]) for c in choices])
    return expanded


def parse(argv: list[str]) -> None:
    """Parse `argv` (without `grid`) as the CLI would, down to the last subcommand; UsageError if not."""
    import warnings

    from grid_core.cli import cli

    warnings.filterwarnings("ignore", "The 'protected_args'", DeprecationWarning)  # click 8.2; still the way
    try:
        ctx = cli.make_context("grid", list(argv))
    except click.exceptions.Exit:  # an eager option (--version, --help) that ends the command: accepted
        return
    command: click.Command = cli
    while isinstance(command, click.Group) and ctx.protected_args + ctx.args:
        name, sub, rest = command.resolve_command(ctx, [*ctx.protected_args, *ctx.args])
        assert sub is not None and name is not None
        ctx, command = sub.make_context(name, rest, parent=ctx), sub


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    assert [p.name for p in PAGES if f"docs/{p.name}" not in readme] == []
    assert [link for link in re.findall(r"\((docs/[^)]+\.md)\)", readme) if not (REPO / link).is_file()] == []
    assert len(readme.splitlines()) < 150


@pytest.mark.parametrize("page", [REPO / "README.md", *PAGES], ids=lambda p: p.name)
def test_every_grid_command_line_in_the_docs_parses(page: Path) -> None:
    bad = []
    for line in grid_lines(page):
        for argv in forms(line):
            try:
                parse(argv[1:])
            except click.ClickException as exc:
                bad.append(f"{line!r} as {shlex.join(argv)}: {exc.format_message()}")
    assert bad == []


def test_the_form_reader_sees_each_form() -> None:
    assert forms("grid jobs list | logs ID [--follow] | stop ID") == [
        ["grid", "jobs", "list"], ["grid", "jobs", "logs", "ID"], ["grid", "jobs", "stop", "ID"]]
    assert forms("grid completion bash|zsh|fish") == [
        ["grid", "completion", "bash"], ["grid", "completion", "zsh"], ["grid", "completion", "fish"]]
    assert forms("grid offload auto --status [--json] | --disable") == [
        ["grid", "offload", "auto", "--status"], ["grid", "offload", "auto", "--disable"]]
    with pytest.raises(click.UsageError):
        parse(["offload", "auto", "--no-such-option"])


# --------------------------------------------------------------------------- the walkthrough


def walkthrough() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Three machines: a walkthrough"):readme.index("## Which config")]
    return [line for block in re.findall(r"```sh\n(.*?)```", section, re.S)
            for line in (raw.split("#")[0].strip() for raw in block.splitlines()) if line]


@pytest.fixture(scope="module")
def three_machines() -> Iterator[dict[str, Any]]:
    require_testbed()
    root = Path(tempfile.mkdtemp(prefix="gdw", dir="/tmp"))
    try:
        with Testbed(n_hosts=3, workdir=root / "bed") as tb:
            project = tb.workdir / "project"  # the hosts see the workdir: the jobs' working directory
            project.mkdir()
            (project / "train.py").write_text("import socket\nprint('trained on', socket.gethostname())\n")
            env = {**os.environ, "HOME": str(root / "home"), "GRID_STATE_DIR": str(root / "state"),
                   "RAY_AUTH_MODE": "disabled", "COLUMNS": "160"}
            env.pop("GRID_CONFIG", None)
            c = {"tb": tb, "project": project, "env": env}
            try:
                yield c
            finally:
                run(c, "grid cluster stop")
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def run(c: dict[str, Any], line: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(line)
    assert argv[0] == "grid"
    return subprocess.run([sys.executable, "-m", "grid_core", *argv[1:]], cwd=c["project"], env=c["env"],
                          capture_output=True, text=True, timeout=timeout)


def describe_machines(c: dict[str, Any]) -> None:
    """Step 1's "describe your machines in it": the desk and two GPU boxes, as the test hosts."""
    # The hosts see this venv, so `cluster install` finds it up to date. They have no GPU driver, so
    # Ray alone is told of one GPU each (a declared gpu_count without a driver fails `grid doctor`).
    c["tb"].write_grid_config(
        c["project"] / "grid.toml", name="lab", backend={"venv": sys.prefix},
        execution={"working_directory": str(c["project"])},
        node_fields={"cpu_count": 2, "memory_gb": 2, "ray_start_params": {"num-gpus": 1}})
    text = (c["project"] / "grid.toml").read_text()
    for host, name in (("host1", "desk"), ("host2", "gpu1"), ("host3", "gpu2")):
        text = text.replace(f'name = "{host}"', f'name = "{name}"')
    (c["project"] / "grid.toml").write_text(text)


def test_the_readme_walkthrough_runs_on_three_machines(three_machines: dict[str, Any]) -> None:
    from tests.test_seed_user import watch

    c = three_machines
    lines = walkthrough()
    assert lines[0] == "grid config init" and lines[-1] == "grid cluster stop"
    said: dict[str, str] = {}
    for line in lines:
        if line == "grid offload watch":
            said[line] = watch(c, line, nodes=("desk", "gpu1", "gpu2"), found="grid: config grid.toml")
            continue
        result = run(c, line)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        said[line] = result.stdout
        if line == "grid config init":
            describe_machines(c)
    assert "up to date" in said["grid cluster install"]
    assert "trained on host2" in said["grid run --node gpu1 --gpus 1 -- python train.py"]
    assert "host" in said["grid run -- python -c 'import socket; print(socket.gethostname())'"]
    boost = said["grid boost request desk cpu 2 --priority high"]
    assert "desk" in boost and "high" in boost
    assert said["grid jobs list"].count("succeeded") == 2, said["grid jobs list"]
