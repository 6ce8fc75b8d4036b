"""The docs say what grid does: every page is reachable from the README, every `grid` command line
in them is one the CLI accepts, the README's three-machine walkthrough runs, word for word, on
three test hosts, and so does every page's list of commands.

A docs line shows forms (`[--json]`, `list | logs ID`, `bash|zsh|fish`, `NODE`): the parse check
tries each form it shows, with placeholders given plain values, through the real click parser.
The run takes each form without its optional parts, a placeholder given a real value (ID: the
newest job or boost; PID: a process of this machine). docs/architecture.md says what runs where.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from tests.conftest import REPO, linked_venv
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


def forms(line: str, values: dict[str, str] = PLACEHOLDERS) -> list[list[str]]:
    """The argv forms a docs line shows: optional parts dropped; each ` | ` alternative continues
    the command before it (an option after its command, a subcommand after its group); `a|b|c`
    words tried one by one; shell redirection and fish's `| source` cut; placeholders given `values`."""
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
            expanded.append([values.get(c[min(k, len(c) - 1)], c[min(k, len(c) - 1)]) for c in choices])
    return expanded


def parse(argv: list[str]) -> None:
    """Parse `argv` (without `grid`) as the CLI would, down to the last subcommand; UsageError if not."""
    import warnings

    from grid_core.cli import cli

    warnings.filterwarnings("ignore", "'protected_args' is deprecated", DeprecationWarning)  # click 8.2; still the way
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
    """The desk and two GPU boxes as three test hosts, and a project folder. grid runs from a venv
    linked to the test environment's, which the hosts use too, so `plugins install` writes there."""
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
            python = linked_venv(tb.workdir / "venv")
            c = {"tb": tb, "project": project, "env": env, "python": str(python), "venv": str(python.parent.parent)}
            try:
                yield c
            finally:
                run(c, "grid cluster stop")
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def run(c: dict[str, Any], line: str | list[str], timeout: float = 240,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(line) if isinstance(line, str) else line
    assert argv[0] == "grid"
    return subprocess.run([c["python"], "-m", "grid_core", *argv[1:]], cwd=cwd or c["project"], env=c["env"],
                          capture_output=True, text=True, timeout=timeout)


def describe_machines(c: dict[str, Any]) -> None:
    """Step 1's "describe your machines in it": the desk and two GPU boxes, as the test hosts."""
    # The hosts see this venv, so `cluster install` finds it up to date. They have no GPU driver, so
    # Ray alone is told of one GPU each (a declared gpu_count without a driver fails `grid doctor`).
    c["tb"].write_grid_config(
        c["project"] / "grid.toml", name="lab", backend={"venv": c["venv"]},
        execution={"working_directory": str(c["project"])},
        node_fields={"cpu_count": 2, "memory_gb": 2, "ray_start_params": {"num-gpus": 1}})
    text = (c["project"] / "grid.toml").read_text()
    for host, name in (("host1", "desk"), ("host2", "gpu1"), ("host3", "gpu2")):
        tags = '\ntags = ["gpu"]' if name.startswith("gpu") else ""
        text = text.replace(f'name = "{host}"', f'name = "{name}"{tags}')
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


# --------------------------------------------------------------------------- every page's commands

# The test hosts have no GPU driver (Ray alone is told of one GPU a node, of no model or memory) and
# no nvidia-smi: these lines must fail there, each with its one clear line, as they would on a
# cluster without such GPUs.
NO_GPUS_HERE = {
    "grid exec --tag gpu --json -- nvidia-smi -L": "nvidia-smi",
    "grid run --gpus 1 --gpu-type A100 -- python train.py": "no node has",
    "grid run --gpus 1 --gpu-memory 20G -- python train.py": "no node has",
    "grid run --gpus 2 --gpu-type 4090,3090 -- python train.py": "no node has",
    "grid boost request desk gpu 1 --gpu-type A100 --gpu-memory 40G": "no node has",
}
# Where an exit status of 0 says too little: what the output must say.
SAYS = {"grid offload move PID --to gpu1": "moved to host2", "grid memory get KEY": "weights\nweights",
        "grid run -- python train.py": "trained on host", "grid exec --all -- nproc": "gpu2 (exit 0"}
# What stands for a placeholder when a line runs; ID is looked up (the newest job or boost), PID
# is a process of this machine started for `offload move`.
VALUES = {"N": "gpu1", "NODE": "gpu1", "KEY": "weights", "FILE": "model.bin",
          "SPEC...": "./examples/offload-policy", "NAME...": "grid-policy-loadavg"}
MOVER = ("import socket, sys, time\nprint('moved to', socket.gethostname())\n"
         "if socket.gethostname() == sys.argv[1]:\n    time.sleep(600)  # the original, until it is moved\n")


def page_commands(page: Path) -> list[list[str]]:
    """A page's `grid` commands as they run, in the page's order: each line's forms (its optional
    parts are checked by the parser above) with the placeholders kept, `cluster stop` last (a
    reference page lists it among the others), and for the README those outside the walkthrough."""
    lines = grid_lines(page)
    if page.name == "README.md":
        lines = [line for line in lines if line not in walkthrough()]
    argvs = [[w for w in argv if w != "..."] for line in lines for argv in forms(line, values={})]
    return sorted(argvs, key=lambda argv: argv[1:3] == ["cluster", "stop"])


def newest_id(c: dict[str, Any], group: str) -> str:
    """The newest job's (JobRecord.submitted) or boost's (Boost.created) id."""
    when = {"jobs": "submitted", "boost": "created"}[group]
    return str(max(json.loads(run(c, f"grid {group} list --json").stdout), key=lambda item: item[when])["id"])


def run_page_line(c: dict[str, Any], argv: list[str]) -> subprocess.CompletedProcess[str] | str:
    """One docs command, its placeholders given values; the dashboard drawn in a terminal."""
    from tests.test_seed_user import watch

    argv = [VALUES.get(w, w) for w in argv]
    if "ID" in argv:
        argv[argv.index("ID")] = newest_id(c, argv[1])
    if "PID" in argv:
        argv[argv.index("PID")] = str(c["mover"].pid)
    if argv[1:] == ["offload", "watch"]:
        return watch(c, "grid offload watch", nodes=("desk", "gpu1", "gpu2"), found="grid: config grid.toml")
    if argv[1:3] == ["config", "init"]:  # the step before a config exists: in a folder of its own
        scratch = Path(tempfile.mkdtemp(dir=c["project"].parent))
        return run(c, argv, cwd=scratch)
    return run(c, argv)


PAGES_WITH_COMMANDS = sorted((p for p in [REPO / "README.md", *PAGES] if page_commands(p)),
                             key=lambda p: ["grid", "cluster", "stop"] in page_commands(p))  # one that stops it last


def test_what_the_run_expects_names_lines_the_docs_show() -> None:
    shown = {shlex.join(argv) for page in PAGES_WITH_COMMANDS for argv in page_commands(page)}
    assert set(NO_GPUS_HERE) | set(SAYS) <= shown
    assert PAGES_WITH_COMMANDS[-1].name == "commands.md" and "memory-pool.md" in {p.name for p in PAGES_WITH_COMMANDS}


@pytest.mark.parametrize("page", PAGES_WITH_COMMANDS, ids=lambda p: p.name)
def test_every_page_s_commands_run_on_three_machines(three_machines: dict[str, Any], page: Path) -> None:
    c = three_machines
    if not (c["project"] / "grid.toml").exists():  # the walkthrough's step 1, when it did not run first
        describe_machines(c)
    (c["project"] / "model.bin").write_bytes(b"weights\n" * 1000)
    (c["project"] / "mover.py").write_text(MOVER)
    if not (c["project"] / "examples").exists():
        shutil.copytree(REPO / "examples" / "offload-policy", c["project"] / "examples" / "offload-policy")
    # Each page starts where its reader would: the cluster up, no policy on, nothing lent. A boost
    # lasts until released, also across a restart: the walkthrough's would hold gpu1's CPUs.
    for line in ("grid cluster start", "grid offload auto --disable"):
        done = run(c, line)
        assert done.returncode == 0, done.stdout + done.stderr
    for boost in json.loads(run(c, "grid boost list --json").stdout):
        assert run(c, f"grid boost release {boost['id']}").returncode == 0
    c["mover"] = subprocess.Popen([c["python"], "mover.py", socket.gethostname()], cwd=c["project"], env=c["env"],
                                  stdout=subprocess.DEVNULL)
    failed = []
    try:
        for argv in page_commands(page):
            line = shlex.join(argv)
            result = run_page_line(c, argv)
            if isinstance(result, str):
                continue
            said = result.stdout + result.stderr
            if line in NO_GPUS_HERE:
                if result.returncode == 0 or NO_GPUS_HERE[line] not in said or "Traceback" in said:
                    failed.append(f"{line}: exit {result.returncode}\n{said[-1500:]}")
            elif result.returncode != 0 or SAYS.get(line, "") not in said:
                failed.append(f"{line}: exit {result.returncode}\n{said[-1500:]}")
    finally:
        c["mover"].kill()
        c["mover"].wait()
    assert failed == []


def benchmark_lines() -> list[list[str]]:
    return [shlex.split(line.split("#")[0]) for page in [REPO / "README.md", *PAGES] for block in sh_blocks(page)
            for line in block.splitlines() if line.startswith(".venv/bin/python benchmarks/")]


def test_every_benchmark_line_names_a_script_that_takes_its_options() -> None:
    """Benchmarks are not run here: each takes minutes, and its figures go into the issues' notes
    (docs/benchmarks.md). Each line's script must exist and start, and take the options shown."""
    lines = benchmark_lines()
    assert len(lines) >= 8
    for _, script, *options in lines:
        shown = subprocess.run([sys.executable, str(REPO / script), "--help"], capture_output=True, text=True,
                               timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert [o for o in options if o.startswith("--") and o not in shown.stdout] == [], (script, shown.stdout)
