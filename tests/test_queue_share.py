"""Fair share and per-user limits (grid_core/queue/share.py, plan.py), and who may do what
(grid_core/access.py): records in, decisions out, no engine."""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from grid_core import access
from grid_core.builtin.fair_share import FairShare
from grid_core.builtin.least_loaded import LeastLoaded
from grid_core.config import AccessSettings, UserLimits
from grid_core.queue.plan import plan
from grid_core.queue.share import Ledger, fair_order, standing
from grid_core.types import Attempt, JobRecord, UserUsage
from tests.conftest import grid
from tests.test_queue_plan import job, slot

DAY = 86400.0


def ran(seq: int, user: str, start: float, end: float | None, cpus: float = 1, gpus: float = 0) -> JobRecord:
    return JobRecord(id=f"r{seq}", node="a", submitted=start, argv=("x",), user=user,
                     state="running" if end is None else "succeeded",
                     seq=seq, cpus=cpus, gpus=gpus, started=start, ended=end,
                     attempts=(Attempt(number=1, node="a", dispatched=start, started=start, ended=end),))


def test_use_halves_each_half_life_and_a_running_job_counts_so_far() -> None:
    ledger = Ledger(half_life_days=7, epoch=0.0)
    ledger.add(ran(1, "ann", 0.0, 100.0, cpus=2))  # 200 CPU-seconds, ended at 100
    ledger.add(ran(1, "ann", 0.0, 100.0, cpus=2))  # the same job read again counts once
    assert math.isclose(ledger.used(100.0)["ann"][0], 200.0)
    assert math.isclose(ledger.used(100.0 + 7 * DAY)["ann"][0], 100.0)
    now = 100.0 + 7 * DAY
    usage = {u.user: u for u in standing(ledger.used(now), [ran(2, "bob", now - 50, None, gpus=1)], now)}
    assert math.isclose(usage["bob"].cpu_seconds, 50.0) and math.isclose(usage["bob"].gpu_seconds, 50.0)
    # bob used all the GPU-seconds: his dominant share is 1, ann's (CPU) 100 / 150.
    assert usage["bob"].share == 1.0 and math.isclose(usage["ann"].share, 100 / 150)
    assert usage["ann"].target == usage["bob"].target == 0.5
    assert (usage["bob"].running, usage["bob"].gpus) == (1, 1.0)


def test_fair_share_runs_the_lighter_user_first_then_priority_then_submission() -> None:
    usage = {"ann": UserUsage(user="ann", share=0.9, target=0.5), "bob": UserUsage(user="bob", share=0.1, target=0.5)}
    jobs = [job(1, user="ann", priority=10), job(2, user="ann"), job(3, user="bob"), job(4, user="bob", priority=10),
            job(5, user="cy")]
    assert [j.id for j in fair_order(jobs, usage)] == ["j5", "j4", "j3", "j1", "j2"]
    result = plan(jobs, [], [slot("a", 2)], FairShare(), {}, usage=usage)
    assert [j.id for j, _ in result.start] == ["j5", "j4"]
    assert result.waiting["j3"].position == 1


def test_a_user_past_their_limit_waits_and_others_go_ahead() -> None:
    running = [ran(1, "ann", 0.0, None, cpus=2)]
    jobs = [job(2, user="ann"), job(3, user="bob"), job(4, user="ann", gpus=1)]
    limits = UserLimits(cpus=2, gpus=1)
    result = plan(jobs, running, [slot("a", 8, free=6, gpus=1)], LeastLoaded(), {}, limits=limits)
    assert [j.id for j, _ in result.start] == ["j3"]
    assert result.waiting["j2"].why == "limit"
    assert "ann's jobs hold 2 of at most 2 CPUs at once ([access.limits] cpus)" in result.waiting["j2"].reason
    # What started in this plan counts too: bob's second job waits behind his first at cpus = 1.
    result = plan([job(5, user="bob"), job(6, user="bob")], [], [slot("a", 8)], LeastLoaded(), {},
                  limits=UserLimits(cpus=1))
    assert [j.id for j, _ in result.start] == ["j5"] and result.waiting["j6"].why == "limit"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ann", "bob", "cy"]), st.floats(0, 1)), max_size=12))
def test_fair_order_keeps_every_job_and_each_user_s_own_order(entries: list[tuple[str, float]]) -> None:
    usage = {u: UserUsage(user=u, share=s, target=0.5) for u, s in entries}
    jobs = [job(i, user=u) for i, (u, _) in enumerate(entries)]
    ordered = fair_order(jobs, usage)
    assert sorted(j.id for j in ordered) == sorted(j.id for j in jobs)
    for user in usage:
        assert [j.seq for j in ordered if j.user == user] == sorted(j.seq for j in jobs if j.user == user)


def test_who_may_what() -> None:
    lab = AccessSettings(users=["ann"], admins=["ada"], group="root")
    assert access.role(lab, "grid", owner="grid") == "owner"
    assert access.role(lab, "root", owner="grid") == "owner"  # root may do anything on the head anyway
    assert access.role(lab, "ada", owner="grid") == "admin"
    assert access.role(lab, "ann", owner="grid") == "member"
    assert access.role(lab, "root", owner="root") == "owner"
    assert access.role(AccessSettings(), "ann", owner="grid") is None  # no [access]: its owner's alone
    assert access.in_group("root", "root") and not access.in_group("root", "no-such-group-here")
    assert "[access] users" in access.stranger("eve", "lab")
    assert "only the cluster's owner and [access] admins" in access.needs_manager("ann", "hold a node")


def test_bad_access_and_scheduler_values_are_each_named_and_nothing_runs(tmp_path: Path) -> None:
    """Through the CLI, as a user meets them: every bad value in one message, exit 2, no traceback."""
    path = tmp_path / "grid.toml"
    path.write_text('[[nodes]]\nname = "a"\n[access]\nusers = ["ann", "not a login"]\ngroup = 3\n'
                    'limits = { cpus = -1, gpus = 1.5 }\n[scheduler]\nhalf_life_days = 0\n')
    checked = grid("config", "validate", "-c", str(path))
    assert checked.returncode == 2 and "Traceback" not in checked.stderr, checked.stderr
    for where in ("access.users[1]", "access.group", "access.limits.cpus", "access.limits.gpus",
                  "scheduler.half_life_days"):
        assert where in checked.stderr, (where, checked.stderr)
    both = grid("jobs", "list", "--user", "ann", "--mine", "-c", str(tmp_path / "none.toml"))
    assert both.returncode == 2 and "give --user NAME or --mine, not both" in both.stderr, both.stderr
