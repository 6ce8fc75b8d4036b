"""The procfs metrics source: its parser is a pure function of the sample script's output."""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grid_core.builtin.procfs_metrics import SAMPLE_ARGV, ProcfsFormatError, ProcfsSource, parse_procfs
from grid_core.config import NodeConfig
from grid_core.types import CommandResult, NodeMetrics

MEMINFO = "MemTotal:  {total} kB\nMemFree: 1000 kB\nMemAvailable:  {avail} kB\nSwapTotal: {swap_total} kB\n" \
          "SwapFree: {swap_free} kB\nHugePages_Total:       0\n"


def render(before: Sequence[int], after: Sequence[int], *, cpus: int = 2, total: int = 8_000_000,
           avail: int = 6_000_000, swap_total: int = 0, swap_free: int = 0, load: str = "0.50",
           gpu: str | None = None) -> str:
    """Text as SAMPLE_SCRIPT prints it on Linux."""
    def stat(times: Sequence[int]) -> str:
        per_cpu = "".join(f"cpu{i} {' '.join(str(t // cpus) for t in times)}\n" for i in range(cpus))
        return f"cpu  {' '.join(map(str, times))} 0 0\n{per_cpu}"

    text = f"@stat\n{stat(before)}@stat\n{stat(after)}@meminfo\n"
    text += MEMINFO.format(total=total, avail=avail, swap_total=swap_total, swap_free=swap_free)
    text += f"@loadavg\n{load} 0.40 0.30 2/345 6789\n"
    if gpu is not None:
        text += f"@gpu\n{gpu}\n"
    return text


def assert_sane(m: NodeMetrics) -> None:
    for value in (m.cpu_percent, m.memory_percent, m.swap_percent):
        assert 0.0 <= value <= 100.0
    assert math.isfinite(m.load1) and m.load1 >= 0
    assert m.cpu_count >= 0 and m.memory_total_bytes > 0


def test_parses_a_typical_sample() -> None:
    # 400 jiffies pass, 100 of them idle (idle 60 + iowait 40): 75 % busy.
    before = [100, 0, 50, 1000, 10, 0, 0, 0]
    after = [300, 0, 150, 1060, 50, 0, 0, 0]
    m = parse_procfs(render(before, after, cpus=4, total=8_000_000, avail=2_000_000, swap_total=1000,
                            swap_free=250, load="1.25", gpu="0, NVIDIA H200, 35, 1024, 143771"))
    assert m.source == "procfs"
    assert m.cpu_percent == pytest.approx(75.0)
    assert m.memory_percent == pytest.approx(75.0)
    assert m.swap_percent == pytest.approx(75.0)
    assert m.load1 == 1.25 and m.cpu_count == 4 and m.memory_total_bytes == 8_000_000 * 1024
    assert len(m.gpus) == 1 and m.gpus[0].name == "NVIDIA H200" and m.gpus[0].util_percent == 35.0


def test_old_kernels_without_memavailable() -> None:
    text = render([0] * 8, [1] * 8).replace("MemAvailable:", "Buffers: 500 kB\nCached: 500 kB\nIgnored:")
    assert parse_procfs(text).memory_percent == pytest.approx(100 * (8_000_000 - 2000) / 8_000_000)


def test_reads_this_machine() -> None:
    out = subprocess.run(SAMPLE_ARGV, capture_output=True, text=True, timeout=10, check=True).stdout
    m = parse_procfs(out)
    assert_sane(m)
    assert m.cpu_count == len(os.sched_getaffinity(0)) or m.cpu_count == os.cpu_count()


@pytest.mark.parametrize(("text", "complaint"), [
    ("", "two /proc/stat readings"),
    ("@stat\ncpu 1 2 3 4\n", "two /proc/stat readings"),
    (render([1] * 8, [2] * 8).replace("@meminfo", "@nothing"), "one /proc/meminfo"),
    (render([1] * 8, [2] * 8).replace("cpu  ", "cpux "), "no aggregate 'cpu' line"),
    (render([1] * 8, [2] * 8).replace("MemTotal", "Total"), "no MemTotal"),
    (render([1] * 8, [2] * 8, load="nan"), "impossible load"),
    (render([1] * 8, [2] * 8, load="-"), "/proc/loadavg is malformed"),
])
def test_malformed_samples_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ProcfsFormatError, match=complaint):
        parse_procfs(text)


def test_unreadable_gpu_lines_are_dropped() -> None:
    for gpu in ("0, A, nan, nan, inf", "garbage", "0, A, 1e400, 1, 1", "x, A, 1, 1, 1"):
        assert parse_procfs(render([1] * 8, [2] * 8, gpu=gpu)).gpus == ()


jiffies = st.lists(st.integers(min_value=0, max_value=2**64), min_size=8, max_size=8)


@given(before=jiffies, deltas=jiffies, cpus=st.integers(1, 512),
       total=st.integers(1, 2**50), avail=st.integers(0, 2**50),
       swap_total=st.integers(0, 2**40), swap_free=st.integers(0, 2**40),
       load=st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_any_plausible_sample_parses_within_range(before: list[int], deltas: list[int], cpus: int, total: int,
                                                  avail: int, swap_total: int, swap_free: int, load: float) -> None:
    after = [b + d for b, d in zip(before, deltas, strict=True)]
    m = parse_procfs(render(before, after, cpus=cpus, total=total, avail=avail, swap_total=swap_total,
                            swap_free=swap_free, load=repr(load)))
    assert_sane(m)
    assert m.cpu_count == cpus and m.load1 == load
    elapsed = sum(deltas)
    idle = deltas[3] + deltas[4]
    assert m.cpu_percent == pytest.approx(100 * (elapsed - idle) / elapsed if elapsed else 0.0)


def parses_or_explains(text: str) -> None:
    try:
        m = parse_procfs(text)
    except ProcfsFormatError as exc:
        assert str(exc)
    else:
        assert_sane(m)


@given(st.text())
def test_garbage_never_crashes(text: str) -> None:
    parses_or_explains(text)


@settings(max_examples=300)
@given(cut=st.integers(0, 2000), junk=st.text(max_size=40), at=st.integers(0, 2000),
       numbers=st.lists(st.sampled_from(["-1", "1e999", "nan", "٣", "²", "99999999999999999999999999", ""]),
                        min_size=1, max_size=5))
def test_damaged_samples_never_crash(cut: int, junk: str, at: int, numbers: list[str]) -> None:
    text = render([5] * 8, [9] * 8, gpu="0, NVIDIA A100, 3, 10, 80")
    damaged = text[:at] + junk + text[at:]
    for i, number in enumerate(numbers):  # swap some figures for values no kernel writes
        damaged = damaged.replace(str(5 + i), number, 1)
    parses_or_explains(damaged[: max(cut, 0)] if cut < len(damaged) else damaged)


class ScriptedTransport:
    """A transport that answers every command with one fixed result."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        self.calls: list[Sequence[str]] = []

    def run(self, argv: Sequence[str], *, timeout: float | None = None, env: Mapping[str, str] | None = None,
            on_output: Callable[[str, str], None] | None = None) -> CommandResult:
        self.calls.append(argv)
        return self.result

    def put(self, local_path: str, remote_path: str) -> None: ...
    def get(self, remote_path: str, local_path: str) -> None: ...
    def close(self) -> None: ...


def test_source_leaves_local_nodes_to_psutil_and_reads_others_in_one_command() -> None:
    ok = ScriptedTransport(CommandResult(0, render([1] * 8, [2] * 8)))
    assert ProcfsSource().sample(NodeConfig(name="here", transport="local"), ok) is None
    assert ok.calls == []
    reading = ProcfsSource().sample(NodeConfig(name="there", host="10.0.0.2"), ok)
    assert reading is not None and reading.source == "procfs"
    assert len(ok.calls) == 1


def test_source_skips_nodes_without_proc_and_reports_failures() -> None:
    remote = NodeConfig(name="mac", host="10.0.0.3")
    assert ProcfsSource().sample(remote, ScriptedTransport(CommandResult(3))) is None
    with pytest.raises(ProcfsFormatError, match=r"reading /proc on mac failed \(exit 1\): denied"):
        ProcfsSource().sample(remote, ScriptedTransport(CommandResult(1, "", "denied\n")))
