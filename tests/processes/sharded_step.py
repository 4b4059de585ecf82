"""Two GRPO steps of the tiny llama on one device and on a 2-device CPU mesh (run with
XLA_FLAGS=--xla_force_host_platform_device_count=2); prints the losses and the first embedding values, as JSON.
With `lora`, two LoRA steps instead, and the first values of a layer's merged q projection.

    python -m tests.processes.sharded_step MODEL_DIR [lora]
"""

import json
import sys

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from profilekit.llm.grpo_step import PolicyTrainer, StepGeometry
from profilekit.llm.lora import AdapterTrainer, LoraConfig
from profilekit.llm.model import load_lm
from resources.compute import ComputeResource


def _with_layer_axis(sharding):
    """A layer weight's sharding with a replicated leading layer axis (NamedSharding on a mesh)."""
    if not isinstance(sharding, NamedSharding):
        return sharding
    return NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec))


def main(path: str, lora: bool = False) -> None:
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, 250, (2, 16)).astype(np.int32)
    valid = np.ones((2, 16), bool)
    valid[0, :5] = False
    completion = rng.integers(3, 250, (4, 8)).astype(np.int32)
    mask = np.ones((4, 8), bool)
    mask[1, 5:] = False
    adv = np.array([1.0, -1.0, 0.5, -0.5], np.float32)
    out = {"devices": len(jax.devices())}
    mesh = ComputeResource(platform="cpu", mesh_shape=[2, 1]).mesh()
    for name, m in (("single", None), ("mesh", mesh)):
        lm = load_lm(path, mesh=m)
        geometry = StepGeometry(samples=2, epsilon=0.2, beta=0.01, chunk=4)
        if lora:
            trainer = AdapterTrainer(lm.model, optax.adamw(1e-2), geometry, LoraConfig(rank=4, alpha=8.0))
        else:
            trainer = PolicyTrainer(lm.model, optax.adamw(1e-3), geometry)
        out[name] = [trainer.step(prompt, valid, completion, mask, adv)["loss"] for _ in range(2)]
        if lora:
            trainer.write_into(lm.model)
            emb = lm.model.layers[1].attn.q_proj.w.get_value()
        else:
            emb = trainer.params["embed"]
            # Where a layer weight lives: in the model, stacked in the trainer (after two steps), in a checkpoint.
            layer = lm.model.layers[0].mlp.gate_proj.kernel.get_value()
            stacked = trainer.params["layers"]["gate"]
            saved = trainer.checkpoint_params()["layers"][0]["mlp"]["gate_proj"]["kernel"].get_value()
            out[name + "_placement"] = {
                "layer_sharded": not layer.sharding.is_fully_replicated,
                "stacked_like_layers": stacked.sharding.is_equivalent_to(_with_layer_axis(layer.sharding), stacked.ndim),
                "checkpoint_like_layer": saved.sharding.is_equivalent_to(layer.sharding, layer.ndim),
                "specs": [str(x.sharding) for x in (layer, stacked, saved)],
            }
        out[name + "_emb"] = np.asarray(emb).ravel()[:50].tolist()
        out[name + "_devices"] = len(emb.sharding.device_set)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] == ["lora"])
