"""One GRPO update of the profiler in JAX + optax, computing tunix's objective without its avoidable work.

The objective is tunix's `grpo_loss_fn` with one update per batch (so π_old = π_θ, ratio 1 with the PPO
gradient), k3 KL to the reference (`low_var_kl`), log-ratio clamped to ±20, and "sequence-mean-token-mean"
aggregation (tokens of a rollout averaged, then rollouts). What differs is only how it is computed:

- each prompt is prefilled once and its KV cache shared by its G rollouts (tunix re-runs the left-padded prompt
  for every rollout in the reference, old-policy and training passes);
- no old-policy pass: with one update per batch its log-probs equal the current ones under stop_gradient;
- log-probs of the sampled tokens come from chunks of hidden states (rematerialised in the backward pass), so
  the [rollouts, tokens, vocabulary] logits tensor never exists;
- the layers run as a `lax.scan` over our forward (`profilekit.llm.forward`), each layer rematerialised or not
  (`StepGeometry.remat`); gemma3 keeps tunix's forward, one uncached pass per rollout;
- with `compute_dtype="bfloat16"` the policy, its gradient and the reference run in bf16 with f32 accumulation
  (the reference is kept in bf16; the optimizer updates f32 master weights).

`tests/test_grpo.py` checks loss and gradients against tunix's `grpo_loss_fn` on a tiny model.
"""

from __future__ import annotations

import dataclasses
import time
from functools import cache, partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from profilekit.llm import forward
from profilekit.llm.model import hidden_states, project_logits

LOG_RATIO_CLAMP = 20.0

# XLA:CPU runs bf16 dots through YNNPACK by default, or through Eigen with EIGEN_DOTS. Which of the two runs the
# update faster depends on the CPU (bench/grpo_step.py, ours-bf16-eigen against ours-bf16-ynn: the update took
# 0.71x the time through Eigen on a Xeon of family 6 model 207, 0.61x through YNNPACK on a Zen 4 EPYC;
# docs/RESULTS.md), so the full fine-tune's update is compiled with whichever a probe finds faster on this CPU. The
# sampler keeps XLA's defaults (YNNPACK), faster for its small decode dots on both.
EIGEN_DOTS = {"xla_cpu_experimental_ynn_fusion_type": ""}
YNNPACK_DOTS: dict[str, str] = {}
CPU_DOT_PATHS = {"ynnpack": YNNPACK_DOTS, "eigen": EIGEN_DOTS}
# The probe: loss and gradient of two residual blocks (an attention-sized and the MLP's projections) of
# SmolLM2-135M's widths over 2,048 tokens, with the update's casts around the dots. Its dots alone do not predict the
# update (on the Zen 4 they take the same time either way, while the update is 0.61x through YNNPACK); with their
# casts, elementwise work and backward pass they point the same way (0.87-0.95x there). The probe has not run on
# the Xeon, whose bare bf16 dots were 1.0-1.5x faster through Eigen.
_PROBE_WIDTHS = (2048, 576, 1536)
_PROBE_ROUNDS = 5
# Eigen is taken only when its median is this much below YNNPACK's (XLA's default), so that a near tie, where
# the choice is noise, does not change the path between two processes of one run.
_EIGEN_MARGIN = 0.95


def _probe_seconds(dtype: str) -> dict[str, list[float]]:
    """Seconds of each of `_PROBE_ROUNDS` runs of the probe per dot path of `CPU_DOT_PATHS`, computing in
    `dtype` on the first CPU device; the paths alternate round by round, so a load that comes and goes slows
    both alike."""
    tokens, d, f = _PROBE_WIDTHS
    compute = jnp.dtype(dtype)

    def dot(a, w):
        return jnp.dot(a, w.astype(compute), preferred_element_type=jnp.float32)

    def loss(p, x):
        h = x.astype(compute)
        for _ in range(2):
            mlp = (jax.nn.silu(dot(h, p["gate"])) * dot(h, p["up"])).astype(compute)
            h = (h.astype(jnp.float32) + dot(h, p["attention"]) + dot(mlp, p["down"])).astype(compute)
        return jnp.mean(jnp.square(h.astype(jnp.float32)))

    with jax.default_device(jax.devices("cpu")[0]):
        keys = jax.random.split(jax.random.PRNGKey(0), 5)
        params = {name: 0.02 * jax.random.normal(k, shape) for name, k, shape in
                  zip(("attention", "up", "gate", "down"), keys, ((d, d), (d, f), (d, f), (f, d)))}
        x = jax.random.normal(keys[4], (tokens, d))
        lowered = jax.jit(jax.value_and_grad(loss)).lower(params, x)
        compiled = {name: lowered.compile(compiler_options=options) for name, options in CPU_DOT_PATHS.items()}
        for run in compiled.values():
            jax.block_until_ready(run(params, x))
        times: dict[str, list[float]] = {name: [] for name in compiled}
        for _ in range(_PROBE_ROUNDS):
            for name, run in compiled.items():
                started = time.perf_counter()
                jax.block_until_ready(run(params, x))
                times[name].append(time.perf_counter() - started)
    return times


@cache
def faster_cpu_dot_path(dtype: str) -> str:
    """"ynnpack" or "eigen": the dot path of `CPU_DOT_PATHS` that runs the probe faster on this CPU for dots in
    `dtype` (measured once per process; Eigen only by `_EIGEN_MARGIN`)."""
    median = {name: float(np.median(seconds)) for name, seconds in _probe_seconds(dtype).items()}
    return "eigen" if median["eigen"] < _EIGEN_MARGIN * median["ynnpack"] else "ynnpack"


def update_dot_path(params: Any, compute_dtype: str) -> str | None:
    """The CPU dot path the update of `params` (a pytree of arrays) is compiled with, None off CPU (other backends
    have no such choice)."""
    platforms = {d.platform for leaf in jax.tree.leaves(params) for d in leaf.devices()}
    return faster_cpu_dot_path(compute_dtype) if platforms == {"cpu"} else None


def _logps_of_tokens(project, hidden, tokens, chunk: int, temperature: float):
    """log π(token) at every position, from [N, T, D] hidden states, `chunk` positions at a time; logits are
    divided by the rollout temperature, as tunix does, so π is the distribution the rollouts were drawn from."""
    n, t, d = hidden.shape
    chunk = max(1, min(chunk, t))
    pad = (-t) % chunk
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    tokens = jnp.pad(tokens, ((0, 0), (0, pad)))
    hs = hidden.reshape(n, -1, chunk, d).swapaxes(0, 1)
    ts = tokens.reshape(n, -1, chunk).swapaxes(0, 1)

    @jax.checkpoint
    def one(h, tok):
        logits = project(h).astype(jnp.float32) / temperature
        picked = jnp.take_along_axis(logits, tok[..., None], axis=-1)[..., 0]
        return picked - jax.nn.logsumexp(logits, axis=-1)

    out = jax.lax.map(lambda xs: one(*xs), (hs, ts))
    return out.swapaxes(0, 1).reshape(n, -1)[:, :t]


def _unshared_logps(model, prompt, prompt_valid, completion, *, samples, chunk, temperature):
    """Prompt + completion of every rollout in one uncached pass, as tunix computes it."""
    prompt, prompt_valid = jnp.repeat(prompt, samples, axis=0), jnp.repeat(prompt_valid, samples, axis=0)
    w, t = prompt.shape[1], completion.shape[1]
    valid = jnp.concatenate([prompt_valid, jnp.ones(completion.shape, bool)], axis=1)
    positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0).astype(jnp.int32)
    causal = jnp.tril(jnp.ones((w + t, w + t), bool))
    h, _ = hidden_states(model, jnp.concatenate([prompt, completion], axis=1), positions, None, causal[None] & valid[:, None, :])
    return _logps_of_tokens(partial(project_logits, model), h[:, w - 1 : w + t - 1], completion, chunk, temperature)


def training_logps(weights: dict, arch: forward.Arch, prompt, prompt_valid, completion, *, samples, chunk,
                   temperature, remat, adapters=None, dtype=None):
    """`completion_logps` over weights in the training layout (`forward.training_weights`: layers pre-stacked),
    cast to `dtype` where given (the layers one at a time inside the scan)."""
    if dtype is not None:
        weights = {k: v if k == "layers" else v.astype(dtype) for k, v in weights.items()}
    weights = forward.with_head(weights, arch)
    stacked = weights["layers"] if adapters is None else {**weights["layers"], "adapters": adapters}
    policy = None if remat else jax.checkpoint_policies.everything_saveable
    project = partial(forward.logits, weights)
    w, t = prompt.shape[1], completion.shape[1]
    positions = jnp.maximum(jnp.cumsum(prompt_valid, axis=1) - 1, 0).astype(jnp.int32)
    causal = jnp.tril(jnp.ones((w, w), bool))[None] & prompt_valid[:, None, :]
    h, (pk, pv) = forward.scanned_forward(weights, stacked, arch, prompt, positions, causal, policy=policy,
                                          layer_dtype=dtype)
    last = jnp.repeat(h[:, -1:, :], samples, axis=0)  # predicts completion token 0
    if t == 1:
        return _logps_of_tokens(project, last, completion, chunk, temperature)
    past = (jnp.repeat(pk, samples, axis=1), jnp.repeat(pv, samples, axis=1))  # axis 0 is the layer
    past_mask = jnp.repeat(prompt_valid, samples, axis=0)[:, None, :]
    own = jnp.tril(jnp.ones((t - 1, t - 1), bool))[None]
    comp_pos = (jnp.repeat(prompt_valid.sum(axis=1), samples)[:, None] + jnp.arange(t - 1)[None, :]).astype(jnp.int32)
    hc, _ = forward.scanned_forward(weights, stacked, arch, completion[:, :-1], comp_pos, own, past=past,
                                    past_mask=past_mask, policy=policy, layer_dtype=dtype)
    return _logps_of_tokens(project, jnp.concatenate([last, hc], axis=1), completion, chunk, temperature)


def completion_logps(model, prompt, prompt_valid, completion, *, samples: int, chunk: int = 32, temperature: float = 1.0,
                     remat: bool = True, adapters: dict | None = None):
    """Per-token log-probs [B·G, T] of completions [B·G, T] (prompt-major rows) given left-padded prompts
    [B, W]; each prompt's prefill is computed once and its keys and values repeated for its `samples` rollouts.
    `remat` recomputes each layer in the backward pass instead of keeping its activations. `adapters` (LoRA):
    {projection: (A, B)} stacked over layers, scaled and in the compute dtype, added to the model's projections
    (`profilekit.llm.forward.project`).

    llama, qwen2 and qwen3 run our forward (`profilekit.llm.forward`, in the dtype of the weights given). gemma3
    keeps tunix's and falls back to one uncached pass per rollout: tunix's sliding-window layers place a
    multi-token input at cache index 0, so a continuation against a prefilled cache would get the wrong window."""
    arch = forward.arch_of(model)
    if arch is not None:
        return training_logps(forward.training_weights(model, arch), arch, prompt, prompt_valid, completion,
                              samples=samples, chunk=chunk, temperature=temperature, remat=remat, adapters=adapters)
    if adapters is not None:
        raise ValueError(f"LoRA adapters need our forward (llama, qwen2, qwen3), not {type(model).__name__}'s")
    return _unshared_logps(model, prompt, prompt_valid, completion, samples=samples, chunk=chunk, temperature=temperature)


def _seq_mean_token_mean(per_token, mask):
    per_seq = (per_token * mask).sum(axis=-1) / jnp.clip(mask.sum(axis=-1), min=1)
    return per_seq.sum() / jnp.clip((mask.sum(axis=-1) > 0).sum(), min=1)


def grpo_loss(logps, ref_logps, advantages, mask, *, epsilon: float, beta: float):
    """PPO-clipped policy loss + β·k3 KL, aggregated like tunix ("sequence-mean-token-mean")."""
    mask = mask.astype(jnp.float32)
    log_ratio = jnp.clip(logps - jax.lax.stop_gradient(logps), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = jnp.exp(log_ratio)
    adv = advantages[:, None].astype(jnp.float32)
    pg1 = -adv * ratio
    pg2 = -adv * jnp.clip(ratio, 1 - epsilon, 1 + epsilon)
    pg_loss = _seq_mean_token_mean(jnp.maximum(pg1, pg2), mask)
    diff = ref_logps - logps
    kl = jnp.exp(diff) - diff - 1
    kl_loss = _seq_mean_token_mean(kl, mask)
    n_tokens = jnp.clip(mask.sum(), min=1)
    aux = {
        "pg_loss": pg_loss,
        "kl_loss": kl_loss,
        "kl": (kl * mask).sum() / n_tokens,
        "clip_fraction": ((pg2 > pg1) * mask).sum() / n_tokens,
    }
    return pg_loss + beta * kl_loss, aux


@dataclasses.dataclass(frozen=True)
class StepGeometry:
    samples: int
    epsilon: float
    beta: float
    chunk: int
    temperature: float = 1.0
    # The dtype the forward and backward passes compute in (weights cast from the f32 master copy; bf16 keeps f32
    # accumulation in every dot, see `profilekit.llm.forward`); the optimizer always updates f32 parameters.
    compute_dtype: str = "float32"
    remat: bool = True  # recompute each layer in the backward pass instead of keeping its activations


def cast_floats(tree, dtype):
    """The floating-point leaves of a parameter tree in `dtype` (others unchanged)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


class ParameterLayout:
    """How a trainer holds a model's parameters. llama, qwen2, qwen3: `forward.training_weights`, the layers
    pre-stacked for the training scan, so no step re-stacks (copies) them. gemma3 (tunix's forward): nnx's
    parameter state. Checkpoints keep nnx's state in both cases (`checkpointed`), so they load into a model as
    they are and their content hash does not depend on the layout."""

    def __init__(self, model: nnx.Module):
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        self.arch = forward.arch_of(model)
        self.nnx_params = jax.tree.structure(params)
        # f32 masters: what `checkpointed` fills in; abstract, so no copy of the model is kept.
        self._template = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32 if jnp.issubdtype(x.dtype, jnp.floating) else x.dtype,
                                           sharding=x.sharding), params)
        # One compiled unstacking instead of a slice per layer and weight (eagerly: 1.2-3 s for parameters and
        # adam moments, on every checkpoint), placed as the model's own weights are.
        self._to_nnx = jax.jit(self._nnx_state, out_shardings=jax.tree.map(lambda t: t.sharding, self._template))

    def trainable(self, params):
        """nnx parameter state -> this layout; a stacked weight is sharded as its layers are, over its trailing
        axes (the layer axis replicated)."""
        if self.arch is None:
            return params
        return placed_training_weights(nnx.merge(self.graphdef, params, self.rest), self.arch)

    def checkpointed(self, params):
        """This layout -> nnx parameter state (f32 floats); new buffers, except for gemma3, whose state is the
        layout (the next step donates them: save before it)."""
        return params if self.arch is None else self._to_nnx(params)

    def _nnx_state(self, params):
        model = nnx.merge(self.graphdef, self._template, self.rest, copy=True)  # new variables each time
        forward.assign_training_weights(model, self.arch, params)
        return nnx.split(model, nnx.Param, ...)[1]

    def logps(self, params, rest, batch, geo: StepGeometry, dtype=None):
        """Log-probs of the batch's completions under `params`, cast to `dtype` where given."""
        prompt, valid, completion = batch[:3]
        kw = dict(samples=geo.samples, chunk=geo.chunk, temperature=geo.temperature, remat=geo.remat)
        if self.arch is None:
            params = params if dtype is None else cast_floats(params, dtype)
            return completion_logps(nnx.merge(self.graphdef, params, rest), prompt, valid, completion, **kw)
        return training_logps(params, self.arch, prompt, valid, completion, dtype=dtype, **kw)


def placed_training_weights(model: nnx.Module, arch: forward.Arch) -> dict:
    """`forward.training_weights` of a model on concrete arrays, each stacked weight sharded as its layers are over
    its trailing axes (the layer axis replicated), not wherever XLA's propagation puts it."""
    weights = forward.training_weights(model, arch)

    def like(stacked: jax.Array, layer: jax.Array) -> jax.Array:
        sharding = layer.sharding
        if not isinstance(sharding, NamedSharding):
            return stacked
        return jax.device_put(stacked, NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec)))

    return weights | {"layers": jax.tree.map(like, weights["layers"], forward.weights_of(model, arch)["layers"][0])}


def over_parameter_trees(fn, tree, structure):
    """`fn` applied to every subtree of `tree` (an optimizer state) that has the parameters' `structure`: adam's
    moments are converted between layouts like the parameters."""
    def matches(node) -> bool:
        return jax.tree.structure(node) == structure

    return jax.tree.map(lambda node: fn(node) if matches(node) else node, tree, is_leaf=matches)


def _train_step(layout: ParameterLayout, tx, geo: StepGeometry, params, rest, opt_state, ref_params, batch):
    advantages, mask = batch[4], batch[3]
    ref_logps = jax.lax.stop_gradient(layout.logps(ref_params, rest, batch, geo))

    def loss_fn(p):
        logps = layout.logps(p, rest, batch, geo, dtype=jnp.dtype(geo.compute_dtype))
        return grpo_loss(logps, ref_logps, advantages, mask, epsilon=geo.epsilon, beta=geo.beta)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    aux = {**aux, "loss": loss, "grad_norm": optax.global_norm(grads)}
    return params, opt_state, aux


def committed(state, params):
    """`state` with its uncommitted leaves (optax's step counter, fresh adapters) committed to the parameters'
    devices, replicated: the second step then reuses the first step's compilation (an uncommitted step counter
    made every run compile the step twice)."""
    first = jax.tree.leaves(params)[0].sharding
    replicated = NamedSharding(first.mesh, PartitionSpec()) if isinstance(first, NamedSharding) else first
    return jax.tree.map(lambda x: x if x.committed else jax.device_put(x, replicated), state)


class PolicyTrainer:
    """Holds policy parameters (f32 masters in `ParameterLayout`'s layout), the frozen reference copy and the
    optimizer state; `step()` applies one update. The masters start from the model's own buffers where they are
    already f32, and the first step donates them: call `write_into` after each step, as training does."""

    def __init__(self, model: nnx.Module, tx: optax.GradientTransformation, geometry: StepGeometry):
        self.layout = ParameterLayout(model)
        self.rest = self.layout.rest
        trainable = self.layout.trainable(nnx.state(model, nnx.Param))
        self.params = cast_floats(trainable, jnp.float32)
        # The reference in the compute dtype, in its own buffers (the policy's are donated every step).
        self.ref_params = jax.tree.map(lambda x: jnp.array(x, copy=True),
                                       cast_floats(trainable, jnp.dtype(geometry.compute_dtype)))
        self.tx = tx
        self.opt_state = committed(tx.init(self.params), self.params)
        self.geometry = geometry
        self.dot_path = update_dot_path(self.params, geometry.compute_dtype)
        self._step = jax.jit(partial(_train_step, self.layout, tx, geometry), donate_argnums=(0, 2),
                             compiler_options=CPU_DOT_PATHS.get(self.dot_path, {}))

    def step(self, prompt, valid, completion, mask, advantages) -> dict[str, float]:
        self.params, self.opt_state, aux = self._step(
            self.params, self.rest, self.opt_state, self.ref_params, (prompt, valid, completion, mask, advantages)
        )
        return {k: float(v) for k, v in aux.items()}

    def checkpoint_params(self):
        """The parameters as checkpoints keep them: nnx's parameter state (f32)."""
        return self.layout.checkpointed(self.params)

    def checkpoint_state(self):
        """(parameters, optimizer state) as checkpoints keep them: nnx's parameter state."""
        return (self.checkpoint_params(),
                over_parameter_trees(self.layout.checkpointed, self.opt_state, jax.tree.structure(self.params)))

    def restore_state(self, params, opt_state) -> None:
        """Continue from `checkpoint_state()`'s layout (a restored checkpoint)."""
        self.opt_state = over_parameter_trees(self.layout.trainable, opt_state, self.layout.nnx_params)
        self.params = self.layout.trainable(params)

    def write_into(self, model: nnx.Module) -> None:
        """Give a model with the same structure (the rollout sampler's) the current parameters, in its own
        dtype; call after every step (gemma3's f32 buffers are shared, and the next step donates them)."""
        current = nnx.state(model, nnx.Param)
        nnx.update(model, jax.tree.map(lambda new, old: new.astype(old.dtype), self.layout.checkpointed(self.params),
                                       current))
