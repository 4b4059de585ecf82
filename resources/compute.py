"""JAX compute: platform, multi-host initialisation and device mesh. The profiler's weights and inputs are placed
on this mesh (tunix's sharding rules over the 'fsdp' and 'tp' axes)."""

from __future__ import annotations

from functools import lru_cache

import jax
from dagster import ConfigurableResource


@lru_cache(maxsize=1)
def _initialize_distributed(coordinator_address: str, num_processes: int, process_id: int) -> None:
    """Once per process. On TPU pods every argument is discovered from the environment (leave them empty);
    elsewhere (a CPU test, GPU hosts) they must be given."""
    kwargs = {}
    if coordinator_address:
        kwargs = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    jax.distributed.initialize(**kwargs)


@lru_cache(maxsize=4)
def _use_compilation_cache(directory: str) -> None:
    """Compiled XLA programs persist across processes: each step of a multiprocess or k8s run, and every night of
    the refresh, reuses the sampler and GRPO programs compiled before instead of compiling them again."""
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


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
    """`platform`: cpu | gpu | tpu. Axis names follow tunix's sharding rules ('fsdp', 'tp').

    `distributed`: initialise multi-host JAX (a TPU pod slice: every host runs the same step, the mesh spans all
    hosts' devices) before the mesh is built; `coordinator_address` / `num_processes` / `process_id` only where
    the platform does not discover them (TPU does)."""

    platform: str = "cpu"
    mesh_shape: list[int] = [1, 1]
    axis_names: list[str] = ["fsdp", "tp"]
    distributed: bool = False
    compilation_cache_dir: str = ""  # empty: compile in every process
    coordinator_address: str = ""
    num_processes: int = 1
    process_id: int = 0

    def mesh(self) -> jax.sharding.Mesh:
        if self.platform not in ("cpu", "gpu", "tpu"):
            raise ValueError(f"platform must be cpu, gpu or tpu, got {self.platform!r}")
        if len(self.mesh_shape) != len(self.axis_names):
            raise ValueError("mesh_shape and axis_names must have the same length")
        if self.compilation_cache_dir:
            _use_compilation_cache(self.compilation_cache_dir)
        if self.distributed:
            _initialize_distributed(self.coordinator_address, self.num_processes, self.process_id)
        return _mesh(self.platform, tuple(self.mesh_shape), tuple(self.axis_names))
