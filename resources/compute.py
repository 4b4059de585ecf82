"""JAX compute: platform and device mesh. The profiler's weights and inputs are placed on this mesh."""

from __future__ import annotations

from functools import lru_cache

import jax
from dagster import ConfigurableResource


@lru_cache(maxsize=8)
def _mesh(platform: str, shape: tuple[int, ...], axis_names: tuple[str, ...]) -> jax.sharding.Mesh:
    devices = jax.devices(platform)
    needed = 1
    for n in shape:
        needed *= n
    if needed > len(devices):
        raise ValueError(
            f"mesh {shape} needs {needed} {platform} devices, found {len(devices)} "
            "(on CPU, set XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts)"
        )
    return jax.make_mesh(
        shape, axis_names, devices=devices[:needed], axis_types=(jax.sharding.AxisType.Auto,) * len(shape)
    )


class ComputeResource(ConfigurableResource):
    """`platform`: cpu | gpu | tpu. Axis names follow tunix's sharding rules ('fsdp', 'tp')."""

    platform: str = "cpu"
    mesh_shape: list[int] = [1, 1]
    axis_names: list[str] = ["fsdp", "tp"]

    def mesh(self) -> jax.sharding.Mesh:
        if self.platform not in ("cpu", "gpu", "tpu"):
            raise ValueError(f"platform must be cpu, gpu or tpu, got {self.platform!r}")
        if len(self.mesh_shape) != len(self.axis_names):
            raise ValueError("mesh_shape and axis_names must have the same length")
        return _mesh(self.platform, tuple(self.mesh_shape), tuple(self.axis_names))
