"""Finding the configured compute engine (the `grid_backends` registry), with an error that says what to install."""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_core import plugins
from grid_core.errors import PluginError

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig
    from grid_core.types import Backend

# The distribution that provides each well-known backend, for the error when it is missing.
PROVIDERS = {"ray": "grid-plugin-ray-backend"}


def load_backend(config: ClusterConfig) -> Backend:
    """The backend named by `backend.name`, built for this config."""
    name = config.backend.name
    try:
        registration = plugins.host().get("grid_backends", name)
    except PluginError as exc:
        dist = PROVIDERS.get(name)
        hint = f"; install {dist} (pip install {dist})" if dist else ""
        raise PluginError(f"{exc}{hint}") from None
    return registration.factory(config)  # type: ignore[no-any-return]
