"""Batched generation with a KV cache: one jitted prefill, one jitted `lax.while_loop` decode.

Prompts are left-padded to a length bucket (so a new prompt length rarely recompiles); only the last prompt
position is projected to the vocabulary during prefill. llama, qwen2 and qwen3 run our own forward
(`profilekit.llm.forward`: f32-accumulating dots in the weights' dtype, heads-major f32 KV cache updated in place);
gemma3 runs tunix's. Sampling is temperature + top-p (greedy at temperature 0), seeded per call and per step,
so the same seed gives the same tokens. A `Scaffold` makes the loop write fixed token sequences (a format's
tags) between free segments, so a completion follows the format whatever the model would have written there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from profilekit.llm import forward
from profilekit.llm.model import LoadedLM, hidden_states, init_cache, project_logits


@dataclass(frozen=True)
class Scaffold:
    """Token sequences the decode loop writes itself, with free segments between them: `forced[0]`, free segment
    0, `forced[1]`, ..., free segment n - 1, `forced[n]`, end. A free segment ends where the model samples one of
    `stop_ids` or an end-of-text token (replaced by the next forced sequence, never kept) or after `budgets[i]`
    tokens; its first token is sampled with the stop tokens and `blank_ids` (whitespace) masked out, so no segment
    is empty or blank. Which tokens were forced is returned, so that training can leave them out of the loss."""

    forced: tuple[tuple[int, ...], ...]
    budgets: tuple[int, ...]
    stop_ids: tuple[int, ...]
    blank_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if len(self.budgets) != len(self.forced) - 1 or not all(self.forced) or min(self.budgets, default=1) < 1:
            raise ValueError("a scaffold needs n + 1 non-empty forced sequences around n free segments of >= 1 token")

    @property
    def max_tokens(self) -> int:
        return sum(map(len, self.forced)) + sum(self.budgets)

    def fit(self, max_tokens: int) -> Scaffold:
        """This scaffold with its budgets cut in proportion (each to at least 1) so that a completion holds at most
        `max_tokens` tokens, where the forced sequences leave room for it."""
        room, total = max(0, max_tokens - sum(map(len, self.forced))), sum(self.budgets)
        if room >= total:
            return self
        return replace(self, budgets=tuple(max(1, b * room // total) for b in self.budgets))

    def arrays(self, more_stops: set[int]) -> tuple[jnp.ndarray, ...]:
        """forced [n + 1, longest] (zero-padded), their lengths, the budgets, the stop ids and the ids that cannot
        open a segment (the stops and the blanks)."""
        width = max(map(len, self.forced))
        forced = np.zeros((len(self.forced), width), np.int32)
        for i, seq in enumerate(self.forced):
            forced[i, : len(seq)] = seq
        stops = set(self.stop_ids) | more_stops
        if more_stops & {t for seq in self.forced for t in seq}:
            raise ValueError("a scaffold's forced tokens must not end a completion (end-of-text or padding ids)")
        return (jnp.asarray(forced), jnp.asarray([len(f) for f in self.forced], jnp.int32),
                jnp.asarray(self.budgets, jnp.int32), jnp.asarray(sorted(stops), jnp.int32),
                jnp.asarray(sorted(stops | set(self.blank_ids)), jnp.int32))


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 128  # a scaffold is fitted to it (`Scaffold.fit`), and its own length then bounds the completion
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    prompt_bucket: int = 16
    scaffold: Scaffold | None = None


@dataclass
class Generation:
    tokens: list[list[int]]
    prompt_tokens: list[int]
    seconds: float
    stats: dict = field(default_factory=dict)
    stops: list[int | None] = field(default_factory=list)  # the EOS token that ended each row (None: length)
    forced: list[list[bool]] = field(default_factory=list)  # per row and token: written by the scaffold (if any)


def _round_up(n: int, m: int) -> int:
    return max(m, int(math.ceil(n / m)) * m)


# Every decode step attends over the whole cache, so it is only as long as prompt + new tokens need, rounded
# up to a multiple that keeps recompiles rare.
CACHE_ROUND = 16


def _order_keys(x):
    """uint32 keys that sort like the f32 values x (finite)."""
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def nucleus_mask(logits, top_p: float):
    """[B, V] mask of the top-p nucleus: the fewest highest logits whose probability reaches top_p (ties at the
    cutoff kept), as sorting and cumulating would give.

    XLA:CPU's full-vocabulary sort costs ~40 ms a step at batch 8; instead the cutoff is found by bisection over
    the logits' order keys: the smallest key k whose strictly-higher mass is below top_p is always a logit's own
    key (that mass only changes at one), so 32 halvings of the uint32 range land on it exactly.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    keys = _order_keys(logits)
    # Invariant: mass(keys > lo) >= top_p > mass(keys > hi).
    lo = jnp.min(keys, axis=-1, keepdims=True) - 1
    hi = jnp.max(keys, axis=-1, keepdims=True)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        below = jnp.sum(jnp.where(keys > mid, probs, 0.0), axis=-1, keepdims=True) < top_p
        return jnp.where(below, lo, mid), jnp.where(below, mid, hi)

    _, hi = jax.lax.fori_loop(0, 32, halve, (lo, hi))
    return keys >= hi


def _pick(logits, key, temperature: float, top_p: float):
    """Next token from [B, V] logits: greedy when temperature == 0, else exact nucleus sampling."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if top_p < 1.0:
        logits = jnp.where(nucleus_mask(logits, top_p), logits, -jnp.inf)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


class _TunixDecoder:
    """tunix's forward and [B, S, K, D] cache (gemma3)."""

    def __init__(self, model: nnx.Module):
        self.model = model
        self.dtype = model.embedder.input_embedding.value.dtype

    def init(self, batch: int, size: int):
        return init_cache(self.model.config, batch, size, self.dtype)

    def __call__(self, tokens, positions, cache, write_at, mask):
        return hidden_states(self.model, tokens, positions, cache, mask)

    def logits(self, h):
        return project_logits(self.model, h)


class _OwnDecoder:
    """Our forward (`profilekit.llm.forward`): f32-accumulating dots, heads-major cache updated in place."""

    def __init__(self, model: nnx.Module, arch: forward.Arch):
        self.arch = arch
        self.weights = forward.weights_of(model, arch)
        self.num_layers = len(self.weights["layers"])

    def init(self, batch: int, size: int):
        return forward.init_cache(self.arch, self.num_layers, batch, size)

    def __call__(self, tokens, positions, cache, write_at, mask):
        return forward.cached_forward(self.weights, self.arch, tokens, positions, cache, write_at, mask)

    def logits(self, h):
        return forward.logits(self.weights, h)


def decoder_of(model: nnx.Module) -> _OwnDecoder | _TunixDecoder:
    arch = forward.arch_of(model)
    return _TunixDecoder(model) if arch is None else _OwnDecoder(model, arch)


_STATIC = ("max_new", "temperature", "top_p", "cache_size", "samples")


def _scaffold_step(token, progress, scaffold):
    """The token a scaffolded row emits instead of the sampled `token`, and its progress (next forced sequence,
    position in it or -1 while free, free tokens so far in this segment); also whether the token is forced and
    whether it ends the completion (the last forced sequence is complete)."""
    forced, forced_len, budgets, stop_ids, _ = scaffold
    seq, pos, count = progress
    free = pos < 0
    budget = budgets[jnp.clip(seq - 1, 0, budgets.shape[0] - 1)]
    is_forced = ~free | jnp.isin(token, stop_ids) | (count >= budget)
    at = jnp.where(free, 0, pos)
    token = jnp.where(is_forced, forced[seq, at], token)
    seq_done = is_forced & (at + 1 >= forced_len[seq])
    last = seq_done & (seq == forced.shape[0] - 1)
    progress = (jnp.where(seq_done, jnp.minimum(seq + 1, forced.shape[0] - 1), seq),
                jnp.where(is_forced & ~seq_done, at + 1, -1),
                jnp.where(is_forced, 0, count + 1))
    return token, progress, is_forced, last


def _generate(graphdef, state, tokens, valid, eos_ids, pad_id, key, scaffold=None, *, max_new, temperature, top_p,
              cache_size, samples):
    decoder = decoder_of(nnx.merge(graphdef, state))
    n_prompts, prompt_len = tokens.shape
    cache = decoder.init(n_prompts, cache_size)
    positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0).astype(jnp.int32)
    key_valid = jnp.zeros((n_prompts, cache_size), bool).at[:, :prompt_len].set(valid)
    causal = jnp.arange(prompt_len)[:, None] >= jnp.arange(cache_size)[None, :]
    prefill_mask = causal[None] & key_valid[:, None, :]
    h, cache = decoder(tokens, positions, cache, 0, prefill_mask)
    logits = decoder.logits(h[:, -1:, :])[:, 0]
    # Each prompt is prefilled once; its KV cache is then shared by its `samples` continuations.
    cache, logits, positions, key_valid = jax.tree.map(
        lambda x: jnp.repeat(x, samples, axis=0), (cache, logits, positions, key_valid)
    )
    batch = n_prompts * samples
    first = _pick(logits, jax.random.fold_in(key, 0), temperature, top_p)

    if scaffold is not None:
        opening_mask = jnp.zeros((logits.shape[-1],), bool).at[scaffold[4]].set(True)

    def cond(carry):
        step, done = carry[0], carry[5]
        return (step < max_new) & ~jnp.all(done)

    def body(carry):
        step, out, cache, token, pos, done, key_valid, progress, forced_out = carry
        ended = jnp.zeros_like(done)
        if scaffold is not None:
            token, progress, is_forced, ended = _scaffold_step(token, progress, scaffold)
            forced_out = forced_out.at[:, step].set(is_forced & ~done)
        token = jnp.where(done, pad_id, token)
        out = out.at[:, step].set(token)
        done = done | jnp.isin(token, eos_ids) | ended
        write_at = prompt_len + step
        key_valid = key_valid.at[:, write_at].set(True)
        h, cache = decoder(token[:, None], pos[:, None], cache, write_at, key_valid[:, None, :])
        logits = decoder.logits(h)[:, 0]
        if scaffold is not None:
            opening = (progress[1] < 0) & (progress[2] == 0)  # the next token is a segment's first
            logits = jnp.where(opening[:, None] & opening_mask[None, :], -jnp.inf, logits)
        nxt = _pick(logits, jax.random.fold_in(key, step + 1), temperature, top_p)
        return step + 1, out, cache, nxt, pos + 1, done, key_valid, progress, forced_out

    out = jnp.full((batch, max_new), pad_id, jnp.int32)
    start_pos = positions[:, -1] + 1
    # A scaffolded row starts inside its first forced sequence.
    progress = (jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), jnp.int32))
    carry = (jnp.int32(0), out, cache, first, start_pos, jnp.zeros((batch,), bool), key_valid, progress,
             jnp.zeros((batch, max_new), bool))
    step, out, *_, forced_out = jax.lax.while_loop(cond, body, carry)
    return out, step, forced_out


_COMPILED: dict = {}


def _compiled_generate(graphdef):
    """One jitted `_generate` per model structure, so every sampler of the same model (a fresh copy per trained
    checkpoint, per asset step) reuses its compiled programs instead of compiling them again."""
    try:
        if graphdef not in _COMPILED:
            _COMPILED[graphdef] = jax.jit(partial(_generate, graphdef), static_argnames=_STATIC)
        return _COMPILED[graphdef]
    except TypeError:  # some families' graph definitions are not hashable: one per sampler
        return jax.jit(partial(_generate, graphdef), static_argnames=_STATIC)


class Sampler:
    """Generates continuations for token-id prompts with a loaded tunix model, on its mesh if it has one."""

    def __init__(self, lm: LoadedLM, eos_ids: list[int], pad_id: int, mesh: jax.sharding.Mesh | None = None):
        self.lm = lm
        self.reload_weights(rebuild=True)
        self.eos_ids = jnp.asarray(sorted(set(eos_ids)), jnp.int32)
        self.pad_id = int(pad_id)
        self.mesh = mesh

    def reload_weights(self, rebuild: bool = False) -> None:
        """Pick up the model's current parameters (after a training step); `rebuild` also re-traces."""
        if rebuild:
            self.graphdef, self.state = nnx.split(self.lm.model)
            # Closed over rather than a static argument: some families' graph definitions are not hashable.
            self._generate = _compiled_generate(self.graphdef)
        else:
            self.state = nnx.state(self.lm.model)

    def _place(self, x: np.ndarray):
        if self.mesh is None:
            return jnp.asarray(x)
        axis = self.mesh.axis_names[0]
        spec = PartitionSpec(axis) if x.shape[0] % self.mesh.shape[axis] == 0 else PartitionSpec()
        return jax.device_put(x, NamedSharding(self.mesh, spec))

    def generate(self, prompts: list[list[int]], config: SamplingConfig, samples: int = 1) -> Generation:
        """Continuations of each prompt; with `samples` > 1, rows come prompt-major (p0s0, p0s1, ..., p1s0, ...)
        and each prompt's prefill is computed once and shared by its samples (GRPO's G rollouts)."""
        if not prompts:
            return Generation([], [], 0.0)
        started = time.perf_counter()
        width = _round_up(max(len(p) for p in prompts), config.prompt_bucket)
        tokens = np.full((len(prompts), width), self.pad_id, np.int32)
        valid = np.zeros((len(prompts), width), bool)
        for i, p in enumerate(prompts):
            tokens[i, width - len(p):] = p
            valid[i, width - len(p):] = True
        max_new = config.scaffold.max_tokens if config.scaffold is not None else config.max_new_tokens
        cache_size = _round_up(width + max_new, CACHE_ROUND)
        out, steps, forced = self._generate(
            self.state,
            self._place(tokens),
            self._place(valid),
            self.eos_ids,
            jnp.int32(self.pad_id),
            jax.random.PRNGKey(config.seed),
            None if config.scaffold is None else config.scaffold.arrays({*np.asarray(self.eos_ids).tolist(), self.pad_id}),
            max_new=max_new,
            temperature=float(config.temperature),
            top_p=float(config.top_p),
            cache_size=cache_size,
            samples=samples,
        )
        out, forced = np.asarray(out), np.asarray(forced)
        eos = set(np.asarray(self.eos_ids).tolist())
        results, stops, flags = [], [], []
        for row, row_forced in zip(out, forced):
            kept, stop = [], None
            for t in row.tolist():
                if t in eos or t == self.pad_id:  # never a forced token: `Scaffold.arrays` refuses those
                    stop = t if t in eos else None
                    break
                kept.append(t)
            results.append(kept)
            stops.append(stop)
            flags.append(row_forced[: len(kept)].tolist() if config.scaffold is not None else [])
        return Generation(
            tokens=results,
            prompt_tokens=[len(p) for p in prompts for _ in range(samples)],
            seconds=time.perf_counter() - started,
            stats={"padded_prompt_len": width, "cache_size": cache_size, "decode_steps": int(steps)},
            stops=stops,
            forced=flags,
        )
