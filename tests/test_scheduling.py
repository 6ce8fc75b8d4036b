"""The least-loaded scheduler and the nvidia-smi reading format, as pure functions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from grid_core.builtin.least_loaded import LeastLoaded
from grid_core.metrics import parse_nvidia_smi
from grid_core.types import NodeMetrics, NodeView, WorkRequest


def view(name: str, cpu: float, mem: float = 10.0, held: bool = False, cpus: float = 4.0) -> NodeView:
    return NodeView(name, "worker", NodeMetrics("t", cpu, mem), {"CPU": cpus, "GPU": 0.0}, held)


def test_picks_the_lowest_load_that_fits() -> None:
    nodes = [view("busy", 90), view("idle", 5), view("small", 1, mem=2, cpus=0.5)]
    assert LeastLoaded().choose(WorkRequest(cpus=1), nodes).name == "idle"  # type: ignore[union-attr]
    assert LeastLoaded().choose(WorkRequest(cpus=0.5), nodes).name == "small"  # type: ignore[union-attr]
    assert LeastLoaded().choose(WorkRequest(gpus=1), nodes) is None


def test_a_held_node_is_used_only_when_nothing_else_fits() -> None:
    nodes = [view("head", 1, held=True), view("worker", 60)]
    assert LeastLoaded().choose(WorkRequest(cpus=1), nodes).name == "worker"  # type: ignore[union-attr]
    assert LeastLoaded().choose(WorkRequest(cpus=1), nodes[:1]).name == "head"  # type: ignore[union-attr]


percent = st.floats(min_value=0, max_value=100)


@given(st.lists(st.tuples(percent, percent, st.booleans(), st.floats(0, 8)), min_size=1, max_size=30),
       st.floats(0, 8))
def test_choice_is_a_fitting_node_with_minimal_load(rows: list[tuple[float, float, bool, float]], ask: float) -> None:
    nodes = [view(f"n{i}", c, m, h, cpus) for i, (c, m, h, cpus) in enumerate(rows)]
    chosen = LeastLoaded().choose(WorkRequest(cpus=ask), nodes)
    fitting = [n for n in nodes if n.available["CPU"] >= ask]
    if not fitting:
        assert chosen is None
        return
    assert chosen in fitting
    pool = [n for n in fitting if not n.held] or fitting
    assert chosen in pool
    assert max(chosen.metrics.cpu_percent, chosen.metrics.memory_percent) == min(  # type: ignore[union-attr]
        max(n.metrics.cpu_percent, n.metrics.memory_percent) for n in pool  # type: ignore[union-attr]
    )


def test_nvidia_smi_rows() -> None:
    gpus = parse_nvidia_smi("0, NVIDIA H200, 37, 1024, 143771\n1, NVIDIA H200, 0, 0, 143771\n")
    assert [(g.index, g.util_percent) for g in gpus] == [(0, 37.0), (1, 0.0)]
    assert gpus[0].memory_used_bytes == 1024 * 2**20 and 0 < gpus[0].memory_percent < 1


@given(st.text())
def test_nvidia_smi_garbage_never_crashes(text: str) -> None:
    for gpu in parse_nvidia_smi(text):
        assert gpu.memory_total_bytes >= 0 or gpu.memory_percent == 0


@given(st.lists(st.tuples(st.integers(0, 7), st.floats(allow_nan=True, allow_infinity=True),
                          st.floats(allow_nan=True, allow_infinity=True)), max_size=4))
def test_nvidia_smi_odd_numbers_never_crash(rows: list[tuple[int, float, float]]) -> None:
    text = "\n".join(f"{i}, GPU, {u}, {m}, {m}" for i, u, m in rows)
    assert len(parse_nvidia_smi(text)) <= len(rows)
