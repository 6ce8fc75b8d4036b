"""`grid exec`: one command on many nodes at once."""

from __future__ import annotations

import click

from grid_core.cli import completion
from grid_core.cli.context import FiniteFloat, config_option, json_option, print_json, state
from grid_core.cluster import ExecResult


@click.command("exec")
@click.option("--node", "-n", "names", multiple=True, metavar="NAME",
              shell_complete=completion.nodes, help="A node by name (repeatable).")
@click.option("--tag", "-t", "tags", multiple=True, metavar="TAG", help="Nodes with this tag (repeatable).")
@click.option("--all", "all_nodes", is_flag=True, help="Every node (the default without --node or --tag).")
@click.option("--parallel", type=click.IntRange(min=1), default=None, help="Nodes in flight at once [32].")
@click.option("--timeout", type=FiniteFloat(min=0, min_open=True), default=None, help="Seconds per node.")
@json_option
@config_option
@click.argument("argv", nargs=-1, required=True)
def exec_command(names: tuple[str, ...], tags: tuple[str, ...], all_nodes: bool, parallel: int | None,
                 timeout: float | None, as_json: bool, argv: tuple[str, ...]) -> None:
    """Run ARGV on the selected nodes in parallel; exit with the worst status.

    Arguments arrive literally (each is quoted); for pipes or variables, run a shell:
    grid exec --all -- sh -c 'nproc; echo $HOME'
    """
    if all_nodes and (names or tags):
        raise click.UsageError("--all cannot be combined with --node or --tag")
    with state().cluster() as cluster:
        nodes = cluster.select(names, tags)
        results = []
        for result in cluster.exec(nodes, argv, timeout=timeout, parallel=parallel):
            results.append(result)
            if not as_json:
                _print_result(result)
    if as_json:
        order = {n.name: i for i, n in enumerate(nodes)}
        print_json([
            {"node": r.node, "exit_status": r.exit_status, "stdout": r.stdout, "stderr": r.stderr,
             "error": r.error, "seconds": round(r.seconds, 4)}
            for r in sorted(results, key=lambda r: order[r.node])
        ])
    worst = max(r.exit_status for r in results)
    if worst:
        raise SystemExit(worst)


def _print_result(result: ExecResult) -> None:
    status = f"error: {result.error}" if result.error else f"exit {result.exit_status}"
    click.secho(f"── {result.node} ({status}, {result.seconds:.2f} s)", bold=True, err=False)
    if result.stdout:
        click.echo(result.stdout, nl=not result.stdout.endswith("\n"))
    if result.stderr:
        click.echo(result.stderr, nl=not result.stderr.endswith("\n"), err=True)
