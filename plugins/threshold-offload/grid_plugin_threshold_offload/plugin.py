"""Registers the `threshold` offload policy; the policy module is imported only when used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grid_core.hookspecs import hookimpl
from grid_core.types import GridOffloadPolicy


def _threshold(settings: Mapping[str, Any]) -> Any:
    from grid_plugin_threshold_offload.policy import ThresholdPolicy

    return ThresholdPolicy(settings)


@hookimpl
def grid_offload_policies():  # type: ignore[no-untyped-def]
    yield GridOffloadPolicy(name="threshold", summary="hold the head above high-water marks, free it below low ones",
                            factory=_threshold)
