"""grid's own files on nodes and here: unambiguous per-user directories, checked before use, and a
token that is never used when empty, loose or someone else's. Through the real `local` transport."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from grid_core.builtin.local import LocalTransport
from grid_core.config import ClusterConfig, embedded_default, structure
from grid_core.errors import GridError
from grid_core.types import TransportError
from grid_plugin_ray_backend import auth, layout


def _config(name: str, node: str) -> ClusterConfig:
    return structure({"name": name, "nodes": [{"name": node, "host": "10.0.0.1"}]}, "test")


def test_node_directories_do_not_collide_across_names_users_or_state_dirs(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    a, b = _config("lab", "gpu-1"), _config("lab-gpu", "1")
    assert layout.node_dir(a, a.nodes[0]) != layout.node_dir(b, b.nodes[0])
    here = layout.node_dir(a, a.nodes[0])
    monkeypatch.setenv("GRID_STATE_DIR", str(tmp_path / "another-home"))
    assert layout.node_dir(a, a.nodes[0]) != here


def _transport() -> LocalTransport:
    config = embedded_default()
    return LocalTransport(config.head, config)


def test_private_directories_are_made_0700_and_foreign_ones_refused(tmp_path: Path) -> None:
    mine = tmp_path / "grid-x"
    layout.make_private(_transport(), str(mine), str(mine / "wheels"))
    assert (mine.stat().st_mode & 0o777, (mine / "wheels").stat().st_mode & 0o777) == (0o700, 0o700)
    planted = tmp_path / "grid-planted"
    planted.mkdir(mode=0o777)
    os.chmod(planted, 0o777)
    os.chown(planted, pwd.getpwnam("nobody").pw_uid, -1)  # another user made it first
    with pytest.raises(TransportError, match=r"refusing .*grid-planted: it is not .*own directory"):
        layout.make_private(_transport(), str(planted), str(planted / "wheels"))
    assert not (planted / "wheels").exists()
    loose = tmp_path / "grid-loose"
    loose.mkdir()
    os.chmod(loose, 0o755)
    with pytest.raises(TransportError, match="its mode is 755, not 700"):
        layout.make_private(_transport(), str(loose))


def test_an_empty_or_loose_token_is_replaced_and_a_foreign_one_refused() -> None:
    path = auth.local_token("tok")
    first = path.read_text()
    assert len(first) == 64 and path.stat().st_mode & 0o777 == 0o600
    assert auth.local_token("tok").read_text() == first  # kept while sound
    path.write_text("")
    assert len(auth.local_token("tok").read_text()) == 64
    os.chmod(path, 0o644)
    replaced = auth.local_token("tok")
    assert replaced.read_text() != first and replaced.stat().st_mode & 0o777 == 0o600
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(GridError, match="refusing the token"):
        auth.local_token("tok")
    path.unlink()
    auth.local_token("tok")
    auth.forget("tok")
    assert not path.exists()  # a stopped cluster's next start issues a new one


def test_tls_certificates_name_every_address_and_keep_keys_private() -> None:
    config = structure({"name": "tls", "nodes": [{"name": "a", "host": "10.0.0.1"}], "backend": {"tls": True}}, "t")
    auth.make_tls(config, ["10.213.0.11", "10.213.0.12"])
    here = auth.state_dir("tls") / "tls"
    text = subprocess.run(["openssl", "x509", "-in", str(here / "node.crt"), "-noout", "-text"], check=True,
                          capture_output=True, text=True).stdout
    assert "IP Address:10.213.0.11" in text and "IP Address:10.213.0.12" in text
    assert (here / "node.key").stat().st_mode & 0o077 == 0 and (here / "ca.key").stat().st_mode & 0o077 == 0
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(here / "ca.crt"), str(here / "node.crt")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    env = auth.ray_env("/tmp/grid-tls-a", tls=True)
    assert env["RAY_USE_TLS"] == "1" and env["RAY_TLS_SERVER_KEY"] == "/tmp/grid-tls-a/tls/node.key"
