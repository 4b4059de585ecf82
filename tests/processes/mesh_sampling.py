"""Greedy and sampled tokens of the tiny model on one device and on a 2-device CPU mesh (run with
XLA_FLAGS=--xla_force_host_platform_device_count=2), as JSON.

    python -m tests.processes.mesh_sampling MODEL_DIR
"""

import json
import sys

import jax

from profilekit.llm.model import load_lm
from profilekit.llm.sampler import Sampler, SamplingConfig
from resources.compute import ComputeResource


def main(path: str) -> None:
    mesh = ComputeResource(platform="cpu", mesh_shape=[2, 1]).mesh()
    prompts = [[5, 17, 42, 9], [8, 8, 200, 1], [3, 4, 5, 6], [100, 101, 102, 103]]
    out = {"devices": len(jax.devices())}
    for name, m in (("single", None), ("mesh", mesh)):
        lm = load_lm(path, mesh=m)
        s = Sampler(lm, eos_ids=[], pad_id=0, mesh=m)
        out[name] = [s.generate(prompts, SamplingConfig(max_new_tokens=10, temperature=t, seed=7)).tokens for t in (0.0, 1.0)]
        if m is not None:
            out["sharded_devices"] = len(lm.model.embedder.input_embedding.value.sharding.device_set)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
