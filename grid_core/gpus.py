"""The GPUs each node has, how a job asks for a kind of GPU, and what the engine is told (docs/gpus.md).

A node's GPUs come from the driver where grid can read it (NVML or nvidia-smi), else from the
config's `gpus` (or only a count, from `gpu_count`); a config the driver contradicts gets a note
naming both, and the driver's answer is used. At `cluster start` Ray is told, as the node's resources:
- `accelerator_type:<name>` = 1 for each model it has, `<name>` being Ray's own name for the model
  (what Ray's accelerator manager gives GPU 0 of a node it reads itself), so a plain Ray program's
  `accelerator_type="A100"` lands there;
- `grid-gpu-memory-ge-<N>GB` = how many of its GPUs have at least N GB, for each N of a short
  ladder (MEMORY_CLASSES) up to the GPU's size, so that Ray's own scheduler places by memory and
  counts GPUs of each class as it counts GPUs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from grid_core.types import GpuInfo, GpuReading, NodeMetrics, WorkRequest

if TYPE_CHECKING:
    from grid_core.config import NodeConfig

GIB = 2**30
ACCELERATOR_PREFIX = "accelerator_type:"  # Ray's (ray._common.utils.RESOURCE_CONSTRAINT_PREFIX)
ACCELERATOR_ASK = 0.001  # what Ray's own `accelerator_type=` asks of that resource
# Sizes in GB, each about 1.5 times the one before: a 24 GB card has six classes, an H200 eleven.
MEMORY_CLASSES = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
MEMORY_RESOURCE = "grid-gpu-memory-ge-{}GB"
# Ray's own naming (ray/_private/accelerators/nvidia_gpu.py, tests/test_gpus.py compares): the run
# of capitals up to the first word with a digit after the vendor ("NVIDIA A100-SXM4-40GB" is
# A100), else the name less "NVIDIA ", hyphenated ("NVIDIA GeForce RTX 4090" is GeForce-RTX-4090).
_RAY_NAME = re.compile(r"\w+\s+((?:[A-Z]+\s+)*[A-Z0-9]*\d[A-Z0-9]*)")
_VENDORS = ("NVIDIA ", "Tesla ")


def ray_name(model: str) -> str:
    """Ray's accelerator type for a model, as the driver names it or as a config writes it."""
    name = model if model.startswith(_VENDORS) else f"NVIDIA {model}"
    match = _RAY_NAME.match(name)
    found = match.group(1).replace(" ", "-") if match else None
    if found and len(found) > 1:
        return found
    return re.sub(r"^NVIDIA\s+", "", name).strip().replace(" ", "-")


def shown_model(model: str) -> str:
    """A model as grid shows it: without the driver's "NVIDIA " in front."""
    return model[len("NVIDIA "):] if model.startswith("NVIDIA ") else model


def size_gb(memory_bytes: int) -> int:
    """A GPU's memory in whole GB, as shown and compared (an RTX 4090's 24564 MiB is 24)."""
    return round(memory_bytes / GIB)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def model_matches(model: str, wanted: str) -> bool:
    """Whether `wanted` names the model: its words, in order, case aside (`4090` is `RTX 4090`, `rtx` is
    not `RTX4090`)."""
    have, want = _words(model), _words(wanted)
    return bool(want) and any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1))


# --------------------------------------------------------------------------- a node's GPUs


def configured(node: NodeConfig) -> tuple[GpuInfo, ...]:
    """The GPUs the config gives the node: `gpus`, else `gpu_count` GPUs of unknown model and size."""
    if node.gpus is not None:
        return tuple(GpuInfo(i, g.model, int(g.memory_gb * GIB)) for i, g in enumerate(node.gpus))
    return tuple(GpuInfo(i, "", 0) for i in range(node.gpu_count or 0))


def measured(readings: Iterable[GpuReading]) -> tuple[GpuInfo, ...]:
    """GPUs as the driver reports them."""
    return tuple(GpuInfo(r.index, r.name, r.memory_total_bytes, r.uuid, "driver") for r in readings)


def node_gpus(node: NodeConfig, found: Sequence[GpuInfo]) -> tuple[tuple[GpuInfo, ...], str | None]:
    """The node's GPUs: the driver's (`found`) where it answered, else the config's; and a note
    when the config declares what the driver contradicts."""
    declared = configured(node)
    if not found:
        return declared, None
    return tuple(found), contradiction(node, declared, found)


def read_or_declared(node: NodeConfig, reading: NodeMetrics | None) -> tuple[tuple[GpuInfo, ...], str | None]:
    """node_gpus with the driver's answer taken from the node's reading (None: no reading)."""
    return node_gpus(node, measured(reading.gpus) if reading else ())


def contradiction(node: NodeConfig, declared: Sequence[GpuInfo], found: Sequence[GpuInfo]) -> str | None:
    """A note naming both, where the config's `gpus` (or a `gpu_count` above what is there) disagrees
    with the driver."""
    if node.gpus is None:
        if node.gpu_count is None or node.gpu_count <= len(found):
            return None  # fewer than there are: the config lends only some to the cluster
        said = f"gpu_count = {node.gpu_count}"
    elif len(declared) == len(found) and all(
            model_matches(f.model, d.model) and size_gb(f.memory_bytes) == size_gb(d.memory_bytes)
            for d, f in zip(declared, found, strict=True)):
        return None
    else:
        said = summary(declared)
    return f"the config says {said}, the driver {summary(found)}; grid uses the driver's"


def summary(gpus: Sequence[GpuInfo]) -> str:
    """`2x RTX 3090 24 GB`; a node of mixed GPUs joins its kinds with ` + `; unknown ones are `2 GPUs`."""
    if not gpus:
        return "no GPUs"
    kinds: dict[tuple[str, int], int] = {}
    for g in gpus:
        key = (shown_model(g.model), size_gb(g.memory_bytes))
        kinds[key] = kinds.get(key, 0) + 1
    parts = []
    for (model, gb), count in kinds.items():
        if not model:
            parts.append(f"{count} GPU{'' if count == 1 else 's'}" + (f" {gb} GB" if gb else ""))
        else:
            parts.append(f"{count}x {model}" + (f" {gb} GB" if gb else ""))
    return " + ".join(parts)


# --------------------------------------------------------------------------- requests


def asks_kind(request: WorkRequest) -> bool:
    """Whether the request names a model or a memory size (and so needs to know the nodes' GPUs)."""
    return bool(request.gpu_types or request.gpu_memory_bytes)


def gpu_fits(gpu: GpuInfo, request: WorkRequest) -> bool:
    """Whether one GPU is of a model the request names (any of them) and has the memory it asks."""
    if request.gpu_types and not any(model_matches(gpu.model, t) for t in request.gpu_types):
        return False
    return not request.gpu_memory_bytes or size_gb(gpu.memory_bytes) >= request.gpu_memory_bytes / GIB


def satisfies(gpus: Sequence[GpuInfo], request: WorkRequest) -> bool:
    """Whether a node has enough GPUs of the kind asked for (a fraction of a GPU needs one)."""
    return sum(1 for g in gpus if gpu_fits(g, request)) >= max(1, math.ceil(request.gpus))


def describe(request: WorkRequest) -> str:
    """What the request asks, for a message: `a GPU with 40 GB`, `2 4090 or 3090 GPUs`."""
    count = max(1, math.ceil(request.gpus))
    kind = " or ".join(request.gpu_types)
    noun = f"{kind} GPU" if kind else "GPU"
    article = "an" if noun[0].upper() in "AEIOU" else "a"
    text = f"{article} {noun}" if count == 1 else f"{count} {noun}s"
    if request.gpu_memory_bytes:
        text += f" with {request.gpu_memory_bytes / GIB:g} GB" + (" each" if count > 1 else "")
    return text


def cluster_summary(inventories: Mapping[str, Sequence[GpuInfo]]) -> str:
    """`1x RTX 4090 24 GB (desk), 2x RTX 3090 24 GB (gpu1)`, or `no GPUs`."""
    parts = [f"{summary(gpus)} ({name})" for name, gpus in inventories.items() if gpus]
    return ", ".join(parts) if parts else "no GPUs"


def shortfall(request: WorkRequest, inventories: Mapping[str, Sequence[GpuInfo]]) -> str | None:
    """Why no node can ever take the request, naming what the cluster has; None when one can."""
    if not asks_kind(request) or any(satisfies(g, request) for g in inventories.values()):
        return None
    return f"no node has {describe(request)}; the cluster has {cluster_summary(inventories)}"


# --------------------------------------------------------------------------- the engine's resources


def memory_class(gb: float) -> int | None:
    """The largest class of MEMORY_CLASSES at most `gb`; None below the smallest."""
    return max((c for c in MEMORY_CLASSES if c <= gb), default=None)


def start_resources(gpus: Sequence[GpuInfo]) -> dict[str, float]:
    """The node's GPU resources for the engine: one accelerator type per model, the memory classes."""
    out: dict[str, float] = {}
    for g in gpus:
        if g.model:
            out[ACCELERATOR_PREFIX + ray_name(g.model)] = 1.0
    for c in MEMORY_CLASSES:
        count = sum(1 for g in gpus if g.memory_bytes and size_gb(g.memory_bytes) >= c)
        if count:
            out[MEMORY_RESOURCE.format(c)] = float(count)
    return out


def job_resources(request: WorkRequest, gpus: Sequence[GpuInfo], have: Iterable[str]) -> dict[str, float]:
    """What a job placed on a node asks of the engine beside its GPUs, so that the engine itself holds
    it to the model and memory it asked for: the node's accelerator type where its fitting GPUs are of
    one model, and the memory class at or below the memory asked, each only where the node has it."""
    have = set(have)
    out: dict[str, float] = {}
    if request.gpu_types:
        names = {ray_name(g.model) for g in gpus if g.model and gpu_fits(g, request)}
        if len(names) == 1 and ACCELERATOR_PREFIX + next(iter(names)) in have:
            out[ACCELERATOR_PREFIX + names.pop()] = ACCELERATOR_ASK
    wanted = memory_class(request.gpu_memory_bytes / GIB) if request.gpu_memory_bytes else None
    if wanted is not None and MEMORY_RESOURCE.format(wanted) in have:
        out[MEMORY_RESOURCE.format(wanted)] = request.gpus
    return out


# --------------------------------------------------------------------------- the owner's share


def owner_gpu_percent(gpus: Sequence[GpuReading], cluster: set[int] | frozenset[int]) -> float | None:
    """The busiest GPU's utilisation counting only what is not the cluster's (`cluster`: its pids).

    Per GPU: all of it where none of its processes is the cluster's; none where all are; where both
    use it, the others' per-process share where the driver samples every process, else all of it
    (it cannot be told apart, and the owner's work wins the doubt). None without GPUs."""
    shares = []
    for g in gpus:
        mine = [p for p in g.processes if p.pid in cluster]
        theirs = [p for p in g.processes if p.pid not in cluster]
        if not mine:
            shares.append(g.util_percent)
        elif not theirs:
            shares.append(0.0)
        elif all(p.util_percent is not None for p in g.processes):
            shares.append(min(g.util_percent, sum(p.util_percent or 0.0 for p in theirs)))
        else:
            shares.append(g.util_percent)
    return max(shares, default=None)
