"""LoRA for the GRPO update: low-rank adapters (A, B) on the projection weights of our forward, the only
parameters that get gradients and optimizer state.

Why not qwix's LoRA (installed; tunix uses it): qwix intercepts the `jnp.einsum` / `lax.dot_general` calls made
inside a flax module's `__call__`, and our forward (`profilekit.llm.forward`) calls no module: it takes the
weights out of the model and runs its own custom-VJP einsum (bf16 operands, f32 accumulation). So the adapters
are applied where our forward applies a projection (`forward.project`), with qwix's conventions: A [contracted
axes of the weight, r] initialised he-uniform, B [r, output axes] zero, the update scaled by alpha / r.

- The KL reference is the base model itself: the step runs the same base weights without adapters. The trainer
  holds them once, pre-stacked for the layer scan in the compute dtype (a copy of the layers' weights).
- In the update the adapters are applied unmerged, h·W + (h·A)·B: the base weights get no gradient, so the
  backward pass skips every dW dot (a third of the projections' dots) and the optimizer touches only adapters.
- The sampler gets base + A·B merged into its own weights after each update (`AdapterTrainer.write_into`):
  one cheap merge per step (r-rank products, a weight-sized write) instead of two extra dots per projection,
  layer and token in every decode step, so decoding runs exactly as fast as the base model.
- Checkpoints hold the adapters (and the LoRA config and base version, see `profilekit.checkpoints`);
  loading for inference merges them into a freshly loaded base (`merge_into`).

Stacked adapters: {projection: {"a": [L, ...], "b": [L, ...]}}, stacked over layers as the training scan takes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from profilekit.llm import forward
from profilekit.llm.grpo_step import (
    StepGeometry,
    cast_floats,
    committed,
    grpo_loss,
    placed_training_weights,
    training_logps,
)

ALL_PROJECTIONS = tuple(forward.PROJECTIONS)


@dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: float
    targets: tuple[str, ...] = ALL_PROJECTIONS  # projections of every layer that get an adapter

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {self.rank}")
        if not self.targets or set(self.targets) - set(forward.PROJECTIONS):
            raise ValueError(f"LoRA targets must be a non-empty subset of {ALL_PROJECTIONS}, got {self.targets}")
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _arch(model: nnx.Module) -> forward.Arch:
    arch = forward.arch_of(model)
    if arch is None:
        raise ValueError(f"LoRA runs on our forward (llama, qwen2, qwen3); {type(model).__name__} is not covered")
    return arch


def _adapter_shapes(weight_shape: tuple[int, ...], spec: str, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    a_spec, b_spec, _ = forward.adapter_specs(spec)
    _, sw = spec.split("->")[0].split(",")
    size = dict(zip(sw, weight_shape)) | {"r": rank}
    a_axes, b_axes = a_spec.split("->")[0].split(",")[1], b_spec.split("->")[0].split(",")[1]
    return tuple(size[c] for c in a_axes), tuple(size[c] for c in b_axes)


def init_adapters(model: nnx.Module, config: LoraConfig, key: jax.Array) -> dict:
    """f32 adapters for `model`'s layers: A he-uniform over the weight's contracted axes, B zero (so base +
    adapters starts as the base model)."""
    _arch(model)
    layers = len(model.layers)
    adapters = {}
    for name, name_key in zip(config.targets, jax.random.split(key, len(config.targets))):
        projection = forward.PROJECTIONS[name]
        a_shape, b_shape = _adapter_shapes(projection.variable(model.layers[0]).get_value().shape, projection.spec,
                                           config.rank)
        init = jax.nn.initializers.he_uniform(in_axis=tuple(range(1, len(a_shape))), out_axis=-1, batch_axis=0)
        adapters[name] = {"a": init(name_key, (layers, *a_shape), jnp.float32),
                          "b": jnp.zeros((layers, *b_shape), jnp.float32)}
    return adapters


def applied(adapters: dict, config: LoraConfig, dtype) -> dict:
    """What the forward adds (`forward.project`): {projection: (alpha / r · A, B)} in the compute dtype."""
    return {name: ((ab["a"] * config.scale).astype(dtype), ab["b"].astype(dtype)) for name, ab in adapters.items()}


@partial(jax.jit, static_argnums=(2,))
def _merged(base: dict, adapters: dict, scale: float) -> dict:
    """{projection: [per-layer weight + scale · A·B]} in each weight's dtype (computed in f32, rounded once)."""
    out = {}
    for name, weights in base.items():
        merge_spec = forward.adapter_specs(forward.PROJECTIONS[name].spec)[2]
        a, b = adapters[name]["a"], adapters[name]["b"]
        out[name] = [
            (w.astype(jnp.float32) + scale * jnp.einsum(merge_spec, a[i], b[i])).astype(w.dtype)
            for i, w in enumerate(weights)
        ]
    return out


def _targets(model: nnx.Module, config: LoraConfig) -> dict:
    return {name: [forward.PROJECTIONS[name].variable(layer).get_value() for layer in model.layers]
            for name in config.targets}


def merge_into(model: nnx.Module, base: dict, adapters: dict, config: LoraConfig) -> None:
    """Set `model`'s target projections to `base` (`base_targets`) + alpha / r · A·B, new buffers in the weights'
    dtype (the base arrays are left as they are)."""
    for name, weights in _merged(base, adapters, config.scale).items():
        for layer, w in zip(model.layers, weights):
            forward.PROJECTIONS[name].variable(layer).set_value(w)


def base_targets(model: nnx.Module, config: LoraConfig) -> dict:
    """References (no copy) to `model`'s current target projections, {projection: [per-layer weight]}: the base
    that `merge_into` adds the adapters to."""
    _arch(model)
    return _targets(model, config)


def _adapter_step(arch: forward.Arch, tx, geo: StepGeometry, config: LoraConfig, adapters, opt_state, base, batch):
    prompt, valid, completion, mask, advantages = batch

    def logps(applied_adapters):
        return training_logps(base, arch, prompt, valid, completion, samples=geo.samples, chunk=geo.chunk,
                              temperature=geo.temperature, remat=geo.remat, adapters=applied_adapters)

    ref_logps = jax.lax.stop_gradient(logps(None))  # the reference is the base model itself

    def loss_fn(ad):
        return grpo_loss(logps(applied(ad, config, jnp.dtype(geo.compute_dtype))), ref_logps, advantages, mask,
                         epsilon=geo.epsilon, beta=geo.beta)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(adapters)
    updates, opt_state = tx.update(grads, opt_state, adapters)
    adapters = optax.apply_updates(adapters, updates)
    return adapters, opt_state, {**aux, "loss": loss, "grad_norm": optax.global_norm(grads)}


class AdapterTrainer:
    """`PolicyTrainer`'s interface for LoRA: `params` are the f32 adapters (what is optimised and checkpointed),
    the base weights stay frozen in the compute dtype, in the training layout (layers pre-stacked), and are the
    KL reference."""

    def __init__(self, model: nnx.Module, tx: optax.GradientTransformation, geometry: StepGeometry,
                 config: LoraConfig, seed: int = 0):
        self.config = config
        arch = _arch(model)
        self.base = cast_floats(placed_training_weights(model, arch), jnp.dtype(geometry.compute_dtype))
        self.sampler_base = base_targets(model, config)  # what write_into merges into, in the model's dtype
        self.params = committed(init_adapters(model, config, jax.random.PRNGKey(seed)), self.base)
        self.opt_state = committed(tx.init(self.params), self.base)
        self.geometry = geometry
        self.dot_path: str | None = None  # XLA's defaults: only the full fine-tune's update probes for its path
        self._step = jax.jit(partial(_adapter_step, arch, tx, geometry, config), donate_argnums=(0, 1))

    def step(self, prompt, valid, completion, mask, advantages) -> dict[str, float]:
        self.params, self.opt_state, aux = self._step(
            self.params, self.opt_state, self.base, (prompt, valid, completion, mask, advantages)
        )
        return {k: float(v) for k, v in aux.items()}

    def checkpoint_params(self):
        """The adapters, as checkpoints keep them (the next step donates them: save before it)."""
        return self.params

    def checkpoint_state(self):
        """(adapters, optimizer state): checkpoints keep them as they are."""
        return self.params, self.opt_state

    def restore_state(self, params, opt_state) -> None:
        self.params, self.opt_state = params, opt_state

    def write_into(self, model: nnx.Module) -> None:
        """Give the model the trainer was built from (the rollout sampler's) base + adapters, merged into new
        buffers of its target projections; call after every step."""
        merge_into(model, self.sampler_base, self.params, self.config)
