"""Shell completion through the real CLI, as a shell asks for it (click's _GRID_COMPLETE protocol).

Node names come from the config; job ids and memory keys only from a service on this machine
(tests/test_ray_local.py checks those on a live cluster): never over SSH while a user types.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.conftest import SEED_FILE, grid


def complete(words: str, cwd: Path | None = None, **env: str) -> tuple[list[str], str]:
    """What bash would be offered for the last word of `words`, and what went to stderr."""
    parts = words.split(" ")
    result = grid(cwd=cwd, env={"_GRID_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                "COMP_CWORD": str(len(parts) - 1), **env})
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line], result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_click_s_script_for_each_shell(shell: str) -> None:
    result = grid("completion", shell)
    assert result.returncode == 0, result.stderr
    assert "_GRID_COMPLETE" in result.stdout and f"{shell}_complete" in result.stdout


def test_an_unknown_shell_is_one_clear_error() -> None:
    result = grid("completion", "tcsh")
    assert result.returncode == 2 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.stderr
    assert "Traceback" not in result.stderr


def test_node_names_complete_from_the_config_found_in_this_folder(tmp_path: Path) -> None:
    """The seed's file at its default path: its node names, quietly (no config line on stderr)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "my-cluster-enhanced.yaml").write_bytes(SEED_FILE.read_bytes())
    for words in ("grid boost request ", "grid run --node ", "grid offload hold ", "grid exec -n "):
        offered, stderr = complete(words, cwd=tmp_path)
        assert offered == ["gpu-master", "gpu1", "gpu2"], (words, offered)
        assert stderr == ""
    assert complete("grid offload move 1 --to gpu-", cwd=tmp_path)[0] == ["gpu-master"]


def test_node_names_follow_the_command_line_s_own_config(tmp_path: Path) -> None:
    config = tmp_path / "lab.toml"
    config.write_text('name = "lab"\n[[nodes]]\nname = "desk"\nrole = "head"\n'
                      '[[nodes]]\nname = "box"\nhost = "box.lan"\n')
    assert complete(f"grid -c {config} run --node ")[0] == ["desk", "box"]
    assert complete("grid run --node ", GRID_CONFIG=str(config))[0] == ["desk", "box"]
    config.write_text("not = [valid")
    assert complete(f"grid -c {config} run --node ")[0] == []  # a broken config completes nothing


def test_job_ids_never_open_ssh_to_a_remote_head(tmp_path: Path) -> None:
    """A head reached by SSH: completing a job id offers nothing and never connects to it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.2", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        config = tmp_path / "grid.toml"
        config.write_text(f'name = "far"\n[[nodes]]\nname = "far"\nrole = "head"\nhost = "127.0.0.2"\nport = {port}\n')
        began = time.monotonic()
        for words in ("grid jobs logs ", "grid jobs stop ", "grid memory get "):
            assert complete(words, cwd=tmp_path)[0] == []
        assert time.monotonic() - began < 30
        with pytest.raises(BlockingIOError):
            listener.accept()
