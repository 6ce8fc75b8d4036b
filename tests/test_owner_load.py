"""The owner's load apart from the cluster's, and CPU as a share of the node's allowed CPUs.

Parsers and arithmetic are fed recorded text; one real test burns CPU in a marked process tree
and checks that psutil counts it as the cluster's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from grid_core.builtin import psutil_metrics as pm
from grid_core.builtin.procfs_metrics import parse_procfs
from grid_core.config import NodeConfig, structure
from grid_core.errors import ConfigError
from grid_core.node_cpus import (
    AllowedCpus,
    CgroupLimit,
    cgroup_cpu_limit,
    parse_cfs_quota,
    parse_cgroup_usage,
    parse_cpu_list,
    parse_cpu_max,
    stat_percent,
)
from grid_core.offload import policy_settings
from grid_core.types import NodeMetrics, OffloadInForce

# Two /proc/stat readings of a 4-CPU machine, 100 ticks apart per CPU: cpu0 and cpu1 fully busy,
# cpu2 idle, cpu3 a quarter busy (user nice system idle iowait irq softirq steal guest guest_nice).
STAT_BEFORE = """\
cpu  4000 0 0 4000 0 0 0 0 0 0
cpu0 1000 0 0 1000 0 0 0 0 0 0
cpu1 1000 0 0 1000 0 0 0 0 0 0
cpu2 1000 0 0 1000 0 0 0 0 0 0
cpu3 1000 0 0 1000 0 0 0 0 0 0
intr 12345
ctxt 999
"""
STAT_AFTER = """\
cpu  4225 0 0 4175 0 0 0 0 0 0
cpu0 1090 0 10 1000 0 0 0 0 0 0
cpu1 1100 0 0 1000 0 0 0 0 0 0
cpu2 1000 0 0 1090 10 0 0 0 0 0
cpu3 1020 0 5 1075 0 0 0 0 0 0
intr 12399
ctxt 1999
"""


# --------------------------------------------------------------------------- NodeMetrics


def test_existing_constructors_keep_working_and_owner_fields_default_to_unknown() -> None:
    m = NodeMetrics("t", 50.0, 20.0)
    assert (m.cluster_cpu_percent, m.owner_cpu_percent, m.cluster_memory_bytes, m.cluster_memory_percent,
            m.owner_memory_percent, m.owner_idle_seconds) == (None,) * 6


# --------------------------------------------------------------------------- allowed CPUs


def test_percent_of_the_allowed_cpus_only() -> None:
    assert stat_percent(STAT_BEFORE, STAT_AFTER) == pytest.approx(56.25)  # the aggregate: 225 of 400
    assert stat_percent(STAT_BEFORE, STAT_AFTER, {0, 1}) == pytest.approx(100.0)
    assert stat_percent(STAT_BEFORE, STAT_AFTER, {2}) == pytest.approx(0.0)  # iowait counts as idle
    assert stat_percent(STAT_BEFORE, STAT_AFTER, {2, 3}) == pytest.approx(12.5)
    assert stat_percent(STAT_BEFORE, STAT_AFTER, {3, 7}) == pytest.approx(25.0)  # cpu7 is offline: skipped
    assert stat_percent(STAT_BEFORE, STAT_AFTER, {9}) == 0.0  # nothing to measure
    assert stat_percent(STAT_BEFORE, STAT_BEFORE, {0}) == 0.0  # no tick passed


def test_a_quota_below_the_allowed_cpus_scales_the_share() -> None:
    # cpus 2 and 3 used 25 ticks of 200; under a quota of one CPU that is 25% of what the node may use.
    assert stat_percent(STAT_BEFORE, STAT_AFTER, {2, 3}, capacity=1.0) == pytest.approx(25.0)
    assert stat_percent(STAT_BEFORE, STAT_AFTER, {0, 1}, capacity=1.0) == 100.0  # never above 100
    assert stat_percent(STAT_BEFORE, STAT_AFTER, {2, 3}, capacity=4.0) == pytest.approx(12.5)  # above: no effect


@pytest.mark.parametrize(("text", "ids"), [
    ("0-3", {0, 1, 2, 3}), ("0,2,4-5\n", {0, 2, 4, 5}), ("7", {7}), ("", set()),
])
def test_cpu_lists(text: str, ids: set[int]) -> None:
    assert parse_cpu_list(text) == ids


@pytest.mark.parametrize("text", ["a-b", "3-1", "0-", "1.5", "²"])
def test_bad_cpu_lists(text: str) -> None:
    with pytest.raises(ValueError, match="CPU list"):
        parse_cpu_list(text)


def test_cgroup_quota_files() -> None:
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("150000 100000\n") == 1.5
    assert parse_cpu_max("50000") == 0.5  # period defaults to 100000
    assert parse_cfs_quota("-1\n", "100000\n") is None
    assert parse_cfs_quota("200000\n", "100000\n") == 2.0
    for bad in ("x 100000", "100 0"):
        with pytest.raises(ValueError):
            parse_cpu_max(bad)
    with pytest.raises(ValueError):
        parse_cfs_quota("lots", "100000")


def reader(files: dict[str, str]) -> Callable[[str], str | None]:
    return files.get


def test_cgroup_v2_limit_is_the_tightest_over_the_ancestors() -> None:
    files = {
        "/sys/fs/cgroup/user.slice/cpu.max": "300000 100000\n",
        "/sys/fs/cgroup/user.slice/job/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/user.slice/job/step/cpu.max": "max 100000\n",
    }
    limit = cgroup_cpu_limit("0::/user.slice/job/step\n", reader(files))
    assert limit == CgroupLimit(3.0, "/sys/fs/cgroup/user.slice/cpu.stat")
    files["/sys/fs/cgroup/user.slice/job/step/cpu.max"] = "150000 100000\n"
    assert cgroup_cpu_limit("0::/user.slice/job/step\n", reader(files)) == \
        CgroupLimit(1.5, "/sys/fs/cgroup/user.slice/job/step/cpu.stat")
    assert cgroup_cpu_limit("0::/\n", reader({})) is None  # the root has no cpu.max


def test_cgroup_v2_in_a_container_reads_its_own_root() -> None:
    # A container's cgroup namespace shows its cgroup as '/', and its limit sits on the mount's root.
    assert cgroup_cpu_limit("0::/\n", reader({"/sys/fs/cgroup/cpu.max": "200000 100000"})) == \
        CgroupLimit(2.0, "/sys/fs/cgroup/cpu.stat")
    # Without its own namespace it sees the host's path, absent under its mount: the root answers.
    assert cgroup_cpu_limit("0::/docker/abc\n", reader({"/sys/fs/cgroup/cpu.max": "100000 100000"})) == \
        CgroupLimit(1.0, "/sys/fs/cgroup/cpu.stat")


def test_cgroup_v1_quota() -> None:
    proc_self_cgroup = "12:memory:/x\n3:cpu,cpuacct:/slurm/uid_0/job_7\n1:name=systemd:/\n"
    files = {
        "/sys/fs/cgroup/cpu,cpuacct/slurm/uid_0/job_7/cpu.cfs_quota_us": "400000\n",
        "/sys/fs/cgroup/cpu,cpuacct/slurm/uid_0/job_7/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    }
    assert cgroup_cpu_limit(proc_self_cgroup, reader(files)) == \
        CgroupLimit(4.0, "/sys/fs/cgroup/cpu,cpuacct/slurm/uid_0/job_7/cpuacct.usage")
    # This machine's shape: cgroup v1 with the controllers split and no quota anywhere.
    here = "4:memory:/process_api/x\n2:cpuacct:/\n1:cpu:/\n0::/\n"
    assert cgroup_cpu_limit(here, reader({"/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1",
                                          "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000"})) is None


def test_cgroup_usage_counters() -> None:
    assert parse_cgroup_usage("/x/cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n") == 2.5
    assert parse_cgroup_usage("/x/cpuacct.usage", "3000000000\n") == 3.0
    assert parse_cgroup_usage("/x/cpu.stat", "nr_periods 0\n") is None


def test_allowed_capacity_and_count() -> None:
    assert AllowedCpus(frozenset({0, 1, 2, 3}), None).cpu_count == 4
    assert AllowedCpus(frozenset({0, 1, 2, 3}), CgroupLimit(1.5, "f")).capacity == 1.5
    assert AllowedCpus(frozenset({0, 1, 2, 3}), CgroupLimit(1.5, "f")).cpu_count == 2
    assert AllowedCpus(frozenset({0}), CgroupLimit(8.0, "f")).cpu_count == 1
    assert AllowedCpus(None, None).cpu_count is None


def test_procfs_reads_the_allowed_cpus_it_is_given() -> None:
    text = f"@stat\n{STAT_BEFORE}@stat\n{STAT_AFTER}@meminfo\nMemTotal: 1000 kB\nMemAvailable: 500 kB\n" \
           "@loadavg\n0.5 0.4 0.3 1/2 3\n"
    whole = parse_procfs(text)
    assert whole.cpu_percent == pytest.approx(56.25) and whole.cpu_count == 4
    pinned = parse_procfs(text + "@allowed\nCpus_allowed_list:\t2-3\n")
    assert pinned.cpu_percent == pytest.approx(12.5) and pinned.cpu_count == 2
    odd = parse_procfs(text + "@allowed\nCpus_allowed_list:\tnonsense\n")  # unreadable: the whole machine
    assert odd.cpu_percent == pytest.approx(56.25) and odd.cpu_count == 4


# --------------------------------------------------------------------------- the cluster's processes

MARK = "/tmp/grid-lab-head-0123456789/ray"
TABLE: dict[int, tuple[int, list[str]]] = {
    1: (0, ["/sbin/init"]),
    10: (1, ["bash"]),
    11: (10, ["vim", "notes.txt"]),
    12: (10, ["tail", "-f", f"{MARK}/session_latest/logs/raylet.out"]),  # names it, but not as an option
    20: (1, ["/venv/bin/raylet", f"--store_socket_name={MARK}/session_1/sockets/plasma_store"]),
    21: (20, ["ray::IDLE"]),  # a worker: Ray rewrote its title
    22: (21, ["python", "my_task_child.py"]),
    30: (1, ["/venv/bin/gcs_server", f"--log_dir={MARK}"]),
    40: (1, ["/venv/bin/raylet", f"--temp_dir={MARK}-other/x"]),  # another directory that starts alike
}


def test_cluster_processes_are_the_marked_trees() -> None:
    assert pm.cluster_pids(TABLE, [MARK]) == {20, 21, 22, 30}
    assert pm.cluster_pids(TABLE, ["/nowhere/ray"]) == set()
    assert pm.cluster_pids(TABLE, [MARK, f"{MARK}-other"]) == {20, 21, 22, 30, 40}


def test_markers_come_from_the_environment() -> None:
    assert pm.markers_from_env({}) is None
    assert pm.markers_from_env({pm.CLUSTER_MARKERS_ENV: ""}) is None
    assert pm.markers_from_env({pm.CLUSTER_MARKERS_ENV: f"{MARK}{os.pathsep}/b/ray"}) == (MARK, "/b/ray")


def test_cpu_seconds_between_samples() -> None:
    before = pm.ProcessSample(100.0, {(20, 50.0): 10.0, (21, 60.0): 5.0, (99, 70.0): 1.0}, 0)
    after = pm.ProcessSample(105.0, {(20, 50.0): 12.0, (21, 60.0): 5.5, (23, 102.0): 0.7, (24, 10.0): 9.0}, 0)
    # 2 + 0.5 from the old ones, 0.7 from a new one; pid 24 was there before but not the cluster's then;
    # pid 99 ended (its last moments are not seen).
    assert pm.cpu_seconds_between(before, after) == pytest.approx(3.2)


def reading(when: float, stat: str, cpu: dict[tuple[int, float], float] | None, memory: int = 0) -> pm._Reading:
    procs = None if cpu is None else pm.ProcessSample(when, cpu, memory)
    return pm._Reading(when, stat, None, None, procs)


def test_owner_share_is_the_total_less_the_clusters_never_below_zero() -> None:
    allowed = AllowedCpus(frozenset({0, 1}), None)
    # cpu0 and cpu1 busy for 1 s (100 ticks each); the cluster's processes used 1.5 CPU-seconds of the 2.
    f = pm.cpu_figures(reading(0.0, STAT_BEFORE, {(20, 0.0): 0.0}), reading(1.0, STAT_AFTER, {(20, 0.0): 1.5}, 4096),
                       allowed, 4)
    assert f.cpu_percent == pytest.approx(100.0) and f.cpu_count == 2
    assert f.cluster_cpu_percent == pytest.approx(75.0) and f.owner_cpu_percent == pytest.approx(25.0)
    assert f.cluster_memory_bytes == 4096
    # The processes' clock and /proc/stat's disagree a little: the owner's share stays at 0, not below.
    allowed = AllowedCpus(frozenset({2, 3}), None)
    f = pm.cpu_figures(reading(0.0, STAT_BEFORE, {(20, 0.0): 0.0}), reading(1.0, STAT_AFTER, {(20, 0.0): 0.5}),
                       allowed, 4)
    assert f.cpu_percent == pytest.approx(12.5)
    assert f.cluster_cpu_percent == pytest.approx(25.0) and f.owner_cpu_percent == 0.0
    # Without markers the shares are unknown.
    f = pm.cpu_figures(reading(0.0, STAT_BEFORE, None), reading(1.0, STAT_AFTER, None), allowed, 4)
    assert (f.cluster_cpu_percent, f.owner_cpu_percent, f.cluster_memory_bytes) == (None, None, None)


def test_under_a_quota_the_cgroups_own_usage_is_read() -> None:
    allowed = AllowedCpus(frozenset({0, 1, 2, 3}), CgroupLimit(2.0, "cpu.stat"))
    before = pm._Reading(0.0, STAT_BEFORE, 10.0, None, pm.ProcessSample(0.0, {}, 0))
    after = pm._Reading(2.0, STAT_AFTER, 13.0, None, pm.ProcessSample(2.0, {(5, 1.0): 1.0}, 0))
    f = pm.cpu_figures(before, after, allowed, 4)
    assert f.cpu_percent == pytest.approx(75.0)  # 3 CPU-seconds in 2 s of a 2-CPU quota
    assert f.cluster_cpu_percent == pytest.approx(25.0) and f.owner_cpu_percent == pytest.approx(50.0)
    assert f.cpu_count == 2


@pytest.fixture
def marked_burner() -> Iterator[tuple[str, int]]:
    """A sleeping parent naming a marker as an option, with one burning child (a descendant)."""
    marker = f"/tmp/grid-test-{os.getpid()}/ray"
    child = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"
    parent = (f"import subprocess, sys, time\np = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
              "print(p.pid, flush=True)\ntime.sleep(30)\np.kill()")
    proc = subprocess.Popen([sys.executable, "-c", parent, f"--temp-dir={marker}"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child_pid = int(proc.stdout.readline())
    try:
        yield marker, child_pid
    finally:
        for pid in (child_pid, proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_marked_process_tree_counts_as_the_clusters(marked_burner: tuple[str, int]) -> None:
    marker, _child = marked_burner
    node = NodeConfig(name="head", role="head")
    marked, unmarked = pm.PsutilSource([marker], presence=False), pm.PsutilSource(["/nowhere/ray"], presence=False)
    for source in (marked, unmarked):
        source.sample(node, None)  # type: ignore[arg-type]  # the local node needs no transport
    time.sleep(1.0)
    m = marked.sample(node, None)  # type: ignore[arg-type]
    u = unmarked.sample(node, None)  # type: ignore[arg-type]
    assert m is not None and u is not None
    # A busy machine gives the burner less than a CPU, but never nothing over a second.
    assert m.cluster_cpu_percent is not None and m.cluster_cpu_percent > 2.0
    assert m.owner_cpu_percent is not None and 0.0 <= m.owner_cpu_percent <= m.cpu_percent <= 100.0
    assert m.cluster_memory_bytes is not None and m.cluster_memory_bytes > 0
    assert m.owner_memory_percent is not None and m.owner_memory_percent <= m.memory_percent
    assert u.cluster_cpu_percent == 0.0 and u.cluster_memory_bytes == 0
    assert m.cpu_count == len(os.sched_getaffinity(0)) or m.cpu_count < len(os.sched_getaffinity(0))


# --------------------------------------------------------------------------- settings


def test_owner_idle_seconds_setting() -> None:
    nodes = [{"name": "h", "role": "head"}]
    assert structure({"nodes": nodes}, "t").offload.owner_idle_seconds is None
    assert structure({"nodes": nodes, "offload": {"owner_idle_seconds": 300}}, "t").offload.owner_idle_seconds == 300
    for bad, why in ((0, "positive"), (-5, "positive"), (float("inf"), "finite"), ("soon", "number")):
        with pytest.raises(ConfigError, match=why):
            structure({"nodes": nodes, "offload": {"owner_idle_seconds": bad}}, "t")
    assert policy_settings(OffloadInForce())["owner_idle_seconds"] is None
    assert policy_settings(OffloadInForce(), owner_idle_seconds=300.0)["owner_idle_seconds"] == 300.0


def test_eviction_settings() -> None:
    nodes = [{"name": "h", "role": "head"}]
    offload = structure({"nodes": nodes}, "t").offload
    assert (offload.evict_after, offload.never_evict) == (None, [])  # off unless set
    offload = structure({"nodes": nodes, "offload": {"evict_after": 120, "never_evict": ["ckpt_*"]}}, "t").offload
    assert (offload.evict_after, offload.never_evict) == (120, ["ckpt_*"])
    for bad, why in (({"evict_after": -1}, "negative"), ({"evict_after": "soon"}, "number"),
                     ({"never_evict": "ckpt_*"}, "list")):
        with pytest.raises(ConfigError, match=why):
            structure({"nodes": nodes, "offload": bad}, "t")
    assert policy_settings(OffloadInForce(), evict_after=5.0)["evict_after"] == 5.0
