"""The queue's rules (grid_core/queue/plan.py), driven with records and no engine: the order, the
big job that is not starved, array caps, dependencies, holds and held nodes."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from grid_core.builtin.least_loaded import LeastLoaded
from grid_core.queue.plan import Slot, plan
from grid_core.types import Attempt, JobRecord, NodeView

GiB = 2**30


def job(seq: int, cpus: float = 1, **fields: object) -> JobRecord:
    fields = {"node": None, **fields}
    return JobRecord(id=f"j{seq}", argv=("x",), state="queued", submitted=float(seq), seq=seq, cpus=cpus,
                     **fields)  # type: ignore[arg-type]


def slot(name: str, total: float, free: float | None = None, *, held: bool = False, gpus: float = 0,
         tags: tuple[str, ...] = ()) -> Slot:
    free = total if free is None else free
    return Slot(NodeView(name, "worker", held=held, tags=tags), {"CPU": total, "GPU": gpus, "memory": 8 * GiB},
                {"CPU": free, "GPU": gpus, "memory": 8 * GiB})


def started(jobs: Sequence[JobRecord], slots: Sequence[Slot], **kw: object) -> list[tuple[str, str]]:
    result = plan(jobs, kw.pop("running", []), slots, kw.pop("scheduler", LeastLoaded()), kw.pop("after", {}))  # type: ignore[arg-type]
    return [(j.id, node) for j, node in result.start]


def test_priority_first_then_submission_order() -> None:
    jobs = [job(1), job(2, priority=10), job(3), job(4, priority=10)]
    result = plan(jobs, [], [slot("a", 2)], LeastLoaded(), {})
    assert [j.id for j, _ in result.start] == ["j2", "j4"]
    assert {k: (w.why, w.position) for k, w in result.waiting.items()} == {"j1": ("resources", 1),
                                                                          "j3": ("resources", 2)}
    assert result.waiting["j1"].reason == "no node has 1 CPU free now"


def test_a_big_job_at_the_front_keeps_what_it_waits_for() -> None:
    """A 4-CPU job waits on a node with 1 of 4 free; the 1-CPU jobs behind it may not take that
    CPU (or it would wait for ever behind a stream of them), but may use the other node."""
    slots = [slot("big", 4, free=1), slot("small", 1)]
    result = plan([job(1, cpus=4), job(2), job(3)], [], slots, LeastLoaded(), {})
    assert [(j.id, n) for j, n in result.start] == [("j2", "small")]
    assert result.waiting["j1"].why == "resources" and result.waiting["j3"].why == "priority"
    assert "big" in result.waiting["j3"].reason
    # Without the big job in front, the same small job would have taken that CPU.
    assert started([job(3)], [slot("big", 4, free=1)]) == [("j3", "big")]


def test_a_job_no_node_could_hold_now_waits_without_reserving() -> None:
    result = plan([job(1, cpus=8), job(2)], [], [slot("a", 4)], LeastLoaded(), {})
    assert [j.id for j, _ in result.start] == ["j2"] and result.waiting["j1"].why == "resources"


def test_an_array_never_runs_more_than_its_cap() -> None:
    members = [job(i, array_id="arr", array_index=i, array_cap=2) for i in range(5)]
    running = [attrs.evolve(members[0], state="running", node="a")]
    result = plan(members[1:], running, [slot("a", 8)], LeastLoaded(), {})
    assert [j.id for j, _ in result.start] == ["j1"]
    assert {w.why for w in result.waiting.values()} == {"limit"}


def test_dependencies_wait_start_or_cancel() -> None:
    dependent = job(2, after=("j1",))
    assert plan([dependent], [], [slot("a", 2)], LeastLoaded(), {"j1": "running"}).waiting["j2"].why == "dependency"
    assert started([dependent], [slot("a", 2)], after={"j1": "succeeded"}) == [("j2", "a")]
    cancelled = plan([dependent], [], [slot("a", 2)], LeastLoaded(), {"j1": "failed"}).cancel
    assert [(j.id, why) for j, why in cancelled] == [("j2", "dependency: job j1 failed")]


def test_a_held_job_and_a_held_node_start_nothing() -> None:
    result = plan([job(1, held=True), job(2)], [], [slot("head", 2, held=True)], LeastLoaded(), {})
    assert result.start == [] and result.waiting["j1"].why == "held"
    assert "head held" in result.waiting["j2"].reason
    assert started([job(2)], [slot("head", 2, held=True), slot("w", 1)]) == [("j2", "w")]


def test_a_pinned_job_waits_for_its_node_only() -> None:
    pinned = job(1, node="a", pinned=True)
    assert started([pinned], [slot("a", 2, free=0), slot("b", 2)]) == []
    assert started([pinned], [slot("a", 2), slot("b", 2)]) == [("j1", "a")]


def test_a_scheduler_s_own_order_and_choice_are_followed() -> None:
    class Newest:
        def order(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
            return sorted(jobs, key=lambda j: -j.seq)

        def choose(self, request: object, nodes: Sequence[NodeView]) -> NodeView | None:
            return next((n for n in nodes if "gpu" not in n.tags and n.available["CPU"] >= 1), None)

    slots = [slot("gpu1", 4, tags=("gpu",)), slot("cpu", 1)]
    result = plan([job(1), job(2)], [], slots, Newest(), {})
    assert [(j.id, n) for j, n in result.start] == [("j2", "cpu")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(-1, 1), st.booleans(), st.integers(0, 2)), max_size=25),
       st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.booleans()), min_size=1, max_size=4))
def test_a_plan_never_overcommits_and_gives_every_waiting_job_a_place(
        asks: list[tuple[int, int, bool, int]], nodes: list[tuple[int, int, bool]]) -> None:
    jobs = [job(i, cpus=c, priority=p, held=h, array_id="arr" if a else None, array_cap=a)
            for i, (c, p, h, a) in enumerate(asks)]
    slots = [slot(f"n{i}", total, min(free, total), held=held) for i, (total, free, held) in enumerate(nodes)]
    result = plan(jobs, [], slots, LeastLoaded(), {})
    for s in slots:
        used = sum(j.cpus for j, node in result.start if node == s.view.name)
        assert used <= s.free["CPU"] and (used == 0 or not s.view.held)
    assert sum(1 for j, _ in result.start if j.array_id) <= max([a for *_, a in asks if a] or [0])
    assert not any(j.held for j, _ in result.start)
    waiting = sorted(w.position for w in result.waiting.values())
    assert waiting == list(range(1, len(jobs) - len(result.start) + 1))


def test_a_job_whose_attempt_was_lost_waits_for_that_lease_at_its_old_place() -> None:
    """Requeued after a lost attempt, a job keeps its submission order, and starts only once the
    lost attempt's lease has run out (its runner, if only cut off, has killed its command by then)."""
    lost = Attempt(number=1, node="b", dispatched=1.0, state="lost")
    jobs = [job(1, attempts=(lost,), not_before=100.0), job(2), job(3)]
    early = plan(jobs, [], [slot("a", 1)], LeastLoaded(), {}, now=90.0)
    assert [j.id for j, _ in early.start] == ["j2"]
    assert early.waiting["j1"].why == "lease" and early.waiting["j1"].position == 1
    assert early.waiting["j1"].reason == "attempt 1 on b was lost; it runs again once that attempt's lease has " \
                                         "run out, in 10 s"
    assert [j.id for j, _ in plan(jobs, [], [slot("a", 1)], LeastLoaded(), {}, now=100.5).start] == ["j1"]
