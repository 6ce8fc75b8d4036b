"""GPUs by model and memory without a cluster: the config's `gpus`, NVML's answers (recorded) beside
it, what Ray is told at start, what a job asks, the owner's GPU share and the held head's GPU work."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from grid_core import gpus
from grid_core.config import NodeConfig, structure
from grid_core.errors import ConfigError
from grid_core.types import ControllerState, GpuInfo, GpuProcess, NodeMetrics, NodeView, WorkRequest
from tests.test_nvml import RECORDED, STATUS, FakeNvml, reader

GIB = 2**30
UUID0, UUID1 = "GPU-5f2c0a1e-8d1b-4c55-9e0f-3a1b2c3d4e5f", "GPU-0b7d6e2a-1c3f-4a9e-8b5d-6f7e8d9c0b1a"
# Recorded on the H200 host, with the UUIDs and per-process shares NVML gave there.
H200S = (attrs.evolve(RECORDED[0], uuid=UUID0), attrs.evolve(RECORDED[1], uuid=UUID1))


def node(**keys: Any) -> NodeConfig:
    return structure({"nodes": [{"name": "n", **keys}]}, "test.toml").nodes[0]


def a100s(count: int) -> list[dict[str, Any]]:
    return [{"model": "A100", "memory_gb": 40}] * count


# --------------------------------------------------------------------------- the config


def test_gpus_stand_instead_of_gpu_count_or_beside_it_when_they_agree() -> None:
    assert node(gpus=a100s(2)).gpu_total == 2
    assert node(gpus=a100s(2), gpu_count=2).gpu_total == 2
    assert node(gpu_count=3).gpu_total == 3 and node().gpu_total is None
    with pytest.raises(ConfigError) as caught:
        node(gpus=a100s(2), gpu_count=3)
    assert "nodes[0]: gpu_count = 3 but gpus lists 2 GPUs" in str(caught.value)


@pytest.mark.parametrize(("gpu", "message"), [
    ({"model": "A100"}, "nodes[0].gpus[0].memory_gb: required key is missing"),
    ({"model": "A100", "memory_gb": 0}, "nodes[0].gpus[0].memory_gb: must be positive, got 0"),
    ({"model": " ", "memory_gb": 8}, "nodes[0].gpus[0].model: ' ' is not a GPU model name"),
    ({"model": "A100", "memory_gb": 40, "count": 2}, "nodes[0].gpus[0]: unknown key 'count'"),
])
def test_a_bad_gpu_table_names_its_path(gpu: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        node(gpus=[gpu])
    assert message in str(caught.value)


# --------------------------------------------------------------------------- names, matching, summaries


@pytest.mark.parametrize("name", [
    "NVIDIA A100-SXM4-40GB", "NVIDIA A100 80GB PCIe", "Tesla V100-SXM2-16GB", "NVIDIA GeForce RTX 4090",
    "NVIDIA GeForce RTX 3090", "NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA RTX PRO 6000 Blackwell Server Edition",
    "NVIDIA RTX A6000", "NVIDIA L40S", "Tesla T4", "NVIDIA A10G",
])
def test_the_accelerator_type_is_ray_s_own_name(name: str) -> None:
    from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager

    assert gpus.ray_name(name) == NvidiaGPUAcceleratorManager._gpu_name_to_accelerator_type(name)


def test_a_config_s_model_names_what_the_driver_would() -> None:
    assert gpus.ray_name("A100") == "A100" == gpus.ray_name("NVIDIA A100-SXM4-40GB")
    assert gpus.ray_name("GeForce RTX 4090") == "GeForce-RTX-4090" == gpus.ray_name("NVIDIA GeForce RTX 4090")


@pytest.mark.parametrize(("model", "wanted", "matches"), [
    ("NVIDIA GeForce RTX 4090", "4090", True), ("RTX 4090", "rtx 4090", True), ("RTX 4090", "RTX", True),
    ("NVIDIA GeForce RTX 4090", "409", False), ("NVIDIA GeForce RTX 4090", "4090 rtx", False),
    ("NVIDIA A100-SXM4-40GB", "a100", True), ("NVIDIA A100-SXM4-40GB", "A10", False), ("RTX4090", "4090", False),
    ("", "4090", False),
])
def test_a_gpu_type_matches_whole_words_in_any_case(model: str, wanted: str, matches: bool) -> None:
    assert gpus.model_matches(model, wanted) is matches


def test_summaries_and_the_message_for_a_request_nothing_meets() -> None:
    desk = gpus.configured(node(gpus=[{"model": "RTX 4090", "memory_gb": 24}]))
    gpu1 = gpus.configured(node(gpus=[{"model": "RTX 3090", "memory_gb": 24}] * 2))
    cluster = {"desk": desk, "gpu1": gpu1, "cpu-only": ()}
    assert gpus.summary(gpu1) == "2x RTX 3090 24 GB"
    assert gpus.summary(gpus.measured(H200S)) == "2x H200 140 GB"  # the driver's "NVIDIA " is not shown
    assert gpus.summary(gpus.configured(node(gpu_count=2))) == "2 GPUs"
    assert gpus.summary((*desk, *gpus.configured(node(gpus=a100s(1))))) == "1x RTX 4090 24 GB + 1x A100 40 GB"
    forty = WorkRequest(gpus=1, gpu_memory_bytes=40 * GIB)
    assert gpus.shortfall(forty, cluster) == ("no node has a GPU with 40 GB; the cluster has "
                                              "1x RTX 4090 24 GB (desk), 2x RTX 3090 24 GB (gpu1)")
    assert gpus.shortfall(WorkRequest(gpus=1, gpu_types=("A100",)), cluster).startswith("no node has an A100 GPU;")
    three = WorkRequest(gpus=3, gpu_types=("4090", "3090"), gpu_memory_bytes=20 * GIB)
    assert gpus.shortfall(three, cluster).startswith("no node has 3 4090 or 3090 GPUs with 20 GB each;")
    for met in (WorkRequest(gpus=2, gpu_types=("3090",)), WorkRequest(gpus=0.5, gpu_types=("4090", "3090")),
                WorkRequest(gpus=1, gpu_memory_bytes=int(23.5 * GIB)), WorkRequest(gpus=4)):
        assert gpus.shortfall(met, cluster) is None
    assert gpus.shortfall(forty, {"cpu-only": ()}).endswith("the cluster has no GPUs")


def test_memory_is_whole_gb_as_the_driver_counts_it() -> None:
    rtx4090 = GpuInfo(0, "NVIDIA GeForce RTX 4090", 24564 * 2**20)  # NVML's total for the card
    assert gpus.gpu_fits(rtx4090, WorkRequest(gpus=1, gpu_memory_bytes=24 * GIB))
    assert not gpus.gpu_fits(rtx4090, WorkRequest(gpus=1, gpu_memory_bytes=25 * GIB))
    assert not gpus.gpu_fits(GpuInfo(0, "", 0), WorkRequest(gpus=1, gpu_memory_bytes=GIB))  # unknown: never


# --------------------------------------------------------------------------- NVML beside the config


def test_nvml_s_gpus_win_and_a_config_they_contradict_is_named() -> None:
    found = gpus.measured(reader(FakeNvml(STATUS, H200S)).gpus())
    assert [(g.index, g.model, g.memory_bytes, g.uuid, g.source) for g in found] == [
        (0, "NVIDIA H200", 143771 * 2**20, UUID0, "driver"), (1, "NVIDIA H200", 143771 * 2**20, UUID1, "driver")]
    agreeing = node(gpus=[{"model": "H200", "memory_gb": 140}] * 2)
    assert gpus.node_gpus(agreeing, found) == (found, None)
    wrong = node(gpus=a100s(2))
    assert gpus.node_gpus(wrong, found) == (found, "the config says 2x A100 40 GB, the driver 2x H200 140 GB; "
                                                   "grid uses the driver's")
    assert gpus.node_gpus(node(gpu_count=4), found)[1] == ("the config says gpu_count = 4, the driver "
                                                            "2x H200 140 GB; grid uses the driver's")
    assert gpus.node_gpus(node(gpu_count=1), found)[1] is None  # lending fewer than there are is a choice
    assert gpus.node_gpus(wrong, ()) == (gpus.configured(wrong), None)  # no driver: the config's


def test_nvidia_smi_gives_the_uuid_too() -> None:
    from grid_core.metrics import parse_nvidia_smi

    (gpu,) = parse_nvidia_smi(f"0, NVIDIA H200, 87, 40960, 143771, 61, 412.50, {UUID0}\n")
    assert gpu.uuid == UUID0 and gpu.power_watts == 412.5


# --------------------------------------------------------------------------- what Ray is told, what a job asks


def test_ray_start_gets_the_models_and_memory_classes() -> None:
    from grid_plugin_ray_backend.layout import ray_start_argv

    config = structure({"nodes": [{"name": "lab", "gpus": [*a100s(1), {"model": "RTX 3090", "memory_gb": 24}]}]},
                       "test.toml")
    argv = ray_start_argv(config, config.nodes[0], python="python3", address="10.0.0.2", directory="/tmp/g",
                          head_address=None)
    assert "--num-gpus=2" in argv
    resources = json.loads(next(a for a in argv if a.startswith("--resources=")).split("=", 1)[1])
    assert resources["accelerator_type:A100"] == 1 and resources["accelerator_type:RTX-3090"] == 1
    assert {k: v for k, v in resources.items() if k.startswith("grid-gpu-memory")} == {
        "grid-gpu-memory-ge-4GB": 2, "grid-gpu-memory-ge-6GB": 2, "grid-gpu-memory-ge-8GB": 2,
        "grid-gpu-memory-ge-12GB": 2, "grid-gpu-memory-ge-16GB": 2, "grid-gpu-memory-ge-24GB": 2,
        "grid-gpu-memory-ge-32GB": 1}
    # What the driver there reports wins over the config.
    driver = ray_start_argv(config, config.nodes[0], python="python3", address="10.0.0.2", directory="/tmp/g",
                            head_address=None, gpus=gpus.measured(H200S))
    assert '"accelerator_type:H200": 1.0' in next(a for a in driver if a.startswith("--resources="))


def test_a_job_asks_ray_for_the_model_and_memory_class_the_node_has() -> None:
    lab = gpus.configured(node(gpus=[*a100s(1), {"model": "RTX 3090", "memory_gb": 24}]))
    have = gpus.start_resources(lab)
    assert gpus.job_resources(WorkRequest(gpus=1, gpu_types=("a100",)), lab, have) == {
        "accelerator_type:A100": gpus.ACCELERATOR_ASK}
    assert gpus.job_resources(WorkRequest(gpus=0.5, gpu_memory_bytes=30 * GIB), lab, have) == {
        "grid-gpu-memory-ge-24GB": 0.5}  # the class at or below 30 GB; grid's own choice checked the 30
    # Both models fit a list: Ray cannot be asked for either one, so the node alone holds the job.
    assert gpus.job_resources(WorkRequest(gpus=1, gpu_types=("A100", "3090")), lab, have) == {}


# --------------------------------------------------------------------------- the owner's GPU


def test_the_owner_s_gpu_share_leaves_out_the_cluster_s_processes() -> None:
    # GPU 0: the owner's training (4242) beside a Ray task of the cluster (5151), 87% in all.
    shared = attrs.evolve(H200S[0], processes=(GpuProcess(4242, 38 * GIB, util_percent=80.0),
                                               GpuProcess(5151, 2 * GIB, util_percent=7.0)))
    sampled = reader(FakeNvml(STATUS, (shared, H200S[1]))).gpus()
    assert [p.util_percent for p in sampled[0].processes] == [80.0, 7.0]
    assert gpus.owner_gpu_percent(sampled, {5151}) == 80.0
    assert gpus.owner_gpu_percent(sampled, {4242, 5151}) == 0.0  # only the cluster's work: no pressure
    assert gpus.owner_gpu_percent(sampled, set()) == 87.0
    # Without per-process shares, a GPU both use counts whole: the owner wins the doubt.
    unsampled = reader(FakeNvml(STATUS, H200S)).gpus()
    assert all(p.util_percent is None for p in unsampled[0].processes)
    assert gpus.owner_gpu_percent(unsampled, {5151}) == 87.0
    assert gpus.owner_gpu_percent((), {5151}) is None


def test_the_threshold_policy_holds_for_the_owner_s_gpu_use_only() -> None:
    from grid_plugin_threshold_offload.policy import ThresholdPolicy

    def decide(owner_gpu: float) -> Any:
        policy = ThresholdPolicy({"window": 1})
        head = NodeMetrics("psutil", cpu_percent=5.0, memory_percent=10.0, gpus=H200S,
                           owner_cpu_percent=5.0, owner_gpu_percent=owner_gpu)
        return policy.decide([NodeView("head", "head", head)], ControllerState("head", False, 0.0))

    assert not decide(0.0).hold  # the busy GPU (87%) is the cluster's
    held = decide(95.0)
    assert held.hold and held.pressure == ("gpu",) and "owner gpu 95% >= 90%" in held.reason


def test_the_cluster_s_gpu_processes_on_a_held_head_are_listed() -> None:
    from grid_plugin_ray_backend.head_work import gpu_work

    rows = gpu_work(reader(FakeNvml(STATUS, H200S)).gpus(), cluster={5151, 4242}, lowered={5151})
    assert [(r.pid, r.kind, r.action) for r in rows] == [(4242, "gpu", "kept"), (5151, "gpu", "lowered")]
    assert rows[1].reason.startswith("on GPU 0, 2048 MiB; its CPU side at the lowest priority")
    assert gpu_work(reader(FakeNvml(STATUS, H200S)).gpus(), cluster=set(), lowered=set()) == ()


# --------------------------------------------------------------------------- doctor and boosts


def test_doctor_shows_the_models_and_a_contradiction() -> None:
    from grid_core.cli.doctor import Probe, checks_for

    listed = json.dumps([[g.index, g.name, g.memory_total_bytes, g.uuid] for g in H200S])
    facts = {"python": "3.11.7", "engine": "2.40.0", "nvidia": "nvidia-smi", "nvml": STATUS.line(), "gpus": listed}

    def gpu_detail(n: NodeConfig, found: dict[str, str]) -> str:
        return next(c.detail for c in checks_for(n, Probe("python3", found), None, True) if c.name == "gpu")

    assert gpu_detail(node(gpu_count=2), facts) == f"{STATUS.line()}; 2x H200 140 GB"
    assert gpu_detail(node(gpus=a100s(2)), facts).endswith(
        "; warning: the config says 2x A100 40 GB, the driver 2x H200 140 GB; grid uses the driver's")
    missing = {"python": "3.11.7", "engine": "2.40.0"}
    assert gpu_detail(node(gpus=a100s(2)), missing).startswith("gpus = [2x A100 40 GB] but neither nvidia-smi")


def test_a_boost_of_a_kind_of_gpu_lends_only_from_nodes_that_have_it() -> None:
    from grid_plugin_ray_backend.rules import ControllerError, Rules
    from tests.test_rules import FakeEngine, policies

    config = structure({"name": "lab", "nodes": [
        {"name": "desk", "role": "head", "gpus": [{"model": "RTX 4090", "memory_gb": 24}]},
        {"name": "gpu1", "gpus": [{"model": "RTX 3090", "memory_gb": 24}] * 2},
        {"name": "big", "gpus": a100s(1)}]}, "test.toml")
    engine = FakeEngine({"desk": {"GPU": 1.0}, "gpu1": {"GPU": 2.0}, "big": {"GPU": 1.0}})
    rules = Rules(config, engine, policies)
    made = rules.boost("desk", "gpu", 1.0, "normal", gpu_types=("A100",))
    assert made.source == "big" and engine.held_on("big") == {"GPU": 1.0} and made.note == "an A100 GPU"
    assert rules.boost("desk", "gpu", 1.0, "normal", gpu_memory_bytes=20 * GIB).source == "gpu1"
    with pytest.raises(ControllerError, match=r"^no node has a GPU with 48 GB; the cluster has 2x RTX 3090 24 GB "
                                              r"\(gpu1\), 1x A100 40 GB \(big\)$"):
        rules.boost("desk", "gpu", 1.0, "normal", gpu_memory_bytes=48 * GIB)
    with pytest.raises(ControllerError, match=r"gpu1 does not have an A100 GPU: it has 2x RTX 3090 24 GB"):
        rules.boost("desk", "gpu", 1.0, "normal", source="gpu1", gpu_types=("A100",))
    with pytest.raises(ControllerError, match="go with a boost of gpu"):
        rules.boost("desk", "cpu", 1.0, "normal", gpu_types=("A100",))
