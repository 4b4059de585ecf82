"""Build the compute resource's mesh with multi-host JAX initialised through a one-process coordinator on
127.0.0.1; prints the process count, mesh size and whether JAX's distributed runtime is up, as JSON."""

import json
import socket

import jax

from resources.compute import ComputeResource


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mesh = ComputeResource(platform="cpu", mesh_shape=[2, 1], distributed=True, coordinator_address=f"127.0.0.1:{port}",
                           num_processes=1, process_id=0).mesh()
    print(json.dumps({"processes": jax.process_count(), "mesh_devices": mesh.devices.size,
                      "initialized": jax.distributed.is_initialized()}))


if __name__ == "__main__":
    main()
