"""GPU claims (grid_core/gpu_claims.py): real locks in a directory of the test's, as the runners of
two clusters on one machine take them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from grid_core.gpu_claims import Claims, claimed_by_others

ANN = {"user": "ann", "cluster": "a", "account": "ann", "job": "j1"}
BOB = {"user": "bob", "cluster": "b", "account": "bob", "job": "j2"}


def test_two_clusters_never_share_a_gpu_and_one_cluster_s_jobs_may(tmp_path: Path) -> None:
    where = str(tmp_path / "claims")
    first = Claims(where)
    assert first.take([0], ANN) == [] and first.indices == [0]
    assert oct(os.stat(where).st_mode & 0o7777) == "0o1777"
    half = Claims(where)  # a second job of ann's cluster, on the same GPU (each asked for half of one)
    assert half.take([0], {**ANN, "job": "j3"}) == []
    other = Claims(where)
    stood = other.take([1, 0], BOB)  # GPU 1 is free, GPU 0 is ann's cluster's: none stays claimed
    assert [c.index for c in stood] == [0] and other.indices == [] and other.held == []
    assert stood[0].words("box").startswith("GPU 0 of box is in use by ann's job j")
    assert stood[0].words("box").endswith("of cluster a (run by ann)")
    assert [c.index for c in claimed_by_others(2, "b", "bob", where)] == [0]
    assert claimed_by_others(2, "a", "ann", where) == []  # its own cluster's claims are not others'
    first.release()
    half.release()
    assert other.take([1, 0], BOB) == [] and other.indices == [1, 0]


def test_a_claim_ends_with_its_holder_however_it_ends(tmp_path: Path) -> None:
    where = str(tmp_path / "claims")
    holder = subprocess.Popen([sys.executable, "-c", "import time; from grid_core.gpu_claims import Claims; "
                               f"c = Claims({where!r}); assert c.take([0], {ANN!r}) == []; "
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    assert Claims(where).take([0], BOB) != []
    holder.kill()
    holder.wait()
    assert Claims(where).take([0], BOB) == []
