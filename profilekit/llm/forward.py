"""Our decoder forward for the llama, qwen2 and qwen3 families, over the parameters tunix loaded.

Why not tunix's forward: XLA:CPU (jaxlib 0.10.2) sends dots to YNNPACK, which runs bf16 natively only as
bf16 x bf16 -> f32. tunix's einsums ask for bf16 outputs, so XLA converts both operands (the whole weight matrix
included) to f32 on every call, and its [B, S, K, D] KV cache makes every decode step transpose and copy each
layer's cache. Here every dot takes operands of one compute dtype and accumulates in f32
(`preferred_element_type`); norms, RoPE, softmax and the residual stream stay in f32; the decode loop's KV cache
is heads-major (keys [B, K, D, S], values [B, K, S, D]), read as it is, and f32 (see `CACHE_DTYPE`). With f32
weights the same code is plain f32.

`einsum` has a custom VJP that casts the f32 cotangent to the compute dtype, so the backward dots are native
bf16 x bf16 -> f32 too (JAX's own transpose would hand an f32 cotangent to a bf16 operand: mixed, upcast).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.models.llama3 import model as llama_lib
from tunix.models.qwen2 import model as qwen2_lib
from tunix.models.qwen3 import model as qwen3_lib

K_MASK = -2.3819763e38  # tunix's mask value: finite, so a fully masked (padding) row stays NaN-free


@dataclass(frozen=True)
class Arch:
    """What the forward needs besides the weights (static under jit)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    norm_eps: float
    qkv_bias: bool
    qk_norm: bool
    tied: bool


def arch_of(model: nnx.Module) -> Arch | None:
    """The architecture of a tunix llama / qwen2 / qwen3 model; None for the families this forward does not
    cover (gemma3: sliding-window layers), which keep tunix's forward."""
    c = model.config
    if isinstance(model, llama_lib.Llama3):
        extra = {"qkv_bias": False, "qk_norm": False, "tied": bool(c.weight_tying)}
    elif isinstance(model, qwen2_lib.Qwen2):
        extra = {"qkv_bias": True, "qk_norm": False, "tied": bool(c.use_tied_embedding)}
    elif isinstance(model, qwen3_lib.Qwen3):
        extra = {"qkv_bias": False, "qk_norm": True, "tied": bool(c.use_tied_embedding)}
    else:
        return None
    return Arch(c.num_heads, c.num_kv_heads, c.head_dim, float(c.rope_theta), float(c.norm_eps), **extra)


@dataclass(frozen=True)
class Projection:
    """A layer's projection weight: where it lives in a tunix decoder layer and the einsum that applies it to the
    layer's input (every contracted axis of the weight leads, the output axes follow)."""

    variable: Callable[[nnx.Module], nnx.Variable]
    spec: str


PROJECTIONS = {
    "q": Projection(lambda layer: layer.attn.q_proj.w, "btd,dnh->btnh"),
    "k": Projection(lambda layer: layer.attn.k_proj.w, "btd,dkh->btkh"),
    "v": Projection(lambda layer: layer.attn.v_proj.w, "btd,dkh->btkh"),
    "o": Projection(lambda layer: layer.attn.o_proj.w, "btnh,nhd->btd"),
    "gate": Projection(lambda layer: layer.mlp.gate_proj.kernel, "btd,df->btf"),
    "up": Projection(lambda layer: layer.mlp.up_proj.kernel, "btd,df->btf"),
    "down": Projection(lambda layer: layer.mlp.down_proj.kernel, "btf,fd->btd"),
}


def _layer_variables(arch: Arch) -> dict[str, Callable[[nnx.Module], nnx.Variable]]:
    """Where each of a decoder layer's weights lives, by role."""
    where = {
        "attn_norm": lambda layer: layer.input_layernorm.w,
        "mlp_norm": lambda layer: layer.post_attention_layernorm.w,
        **{name: p.variable for name, p in PROJECTIONS.items()},
    }
    if arch.qkv_bias:
        where |= {"q_bias": lambda layer: layer.attn.q_bias, "k_bias": lambda layer: layer.attn.k_bias,
                  "v_bias": lambda layer: layer.attn.v_bias}
    if arch.qk_norm:
        where |= {"q_norm": lambda layer: layer.attn.q_norm.w, "k_norm": lambda layer: layer.attn.k_norm.w}
    return where


def _model_variables(model: nnx.Module, arch: Arch) -> dict[str, nnx.Variable]:
    """The model's weights outside its layers, by role (an untied head included)."""
    where = {"embed": model.embedder.input_embedding, "final_norm": model.final_norm.w}
    return where if arch.tied else where | {"head": model.lm_head.w}


def _by_role(model: nnx.Module, arch: Arch) -> tuple[dict, list[dict]]:
    """References to the model's arrays: the weights outside the layers, and each layer's, by role."""
    weights = {name: v.value for name, v in _model_variables(model, arch).items()}
    layers = [{name: get(layer).value for name, get in _layer_variables(arch).items()} for layer in model.layers]
    return weights, layers


def weights_of(model: nnx.Module, arch: Arch) -> dict:
    """References to the model's arrays (no copy), by role. The vocabulary projection is always [D, V]: a tied
    embedding is transposed here, once per jitted call, instead of inside every decode step."""
    weights, layers = _by_role(model, arch)
    return with_head(weights, arch) | {"layers": layers}


def with_head(weights: dict, arch: Arch) -> dict:
    """`weights` with the vocabulary projection [D, V] under "head" (the transposed embedding where it is tied)."""
    return weights | {"head": weights["embed"].T} if arch.tied else weights


def stack_layers(layers: list[dict]) -> dict:
    """Per-layer weights as one tree with a leading layer axis, for `lax.scan`."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *layers)


def training_weights(model: nnx.Module, arch: Arch) -> dict:
    """Every weight of the model in the layout the training scan takes: by role, the layers' weights stacked
    [L, ...] under "layers" (a copy), the others referenced; a tied head is not repeated. Raises if the model has
    a parameter this forward does not use (it would silently stay untrained)."""
    weights, layers = _by_role(model, arch)
    used = len(weights) + sum(map(len, layers))
    present = len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    if used != present:
        raise ValueError(f"{type(model).__name__} has {present} parameters, our forward uses {used}")
    return weights | {"layers": stack_layers(layers)}


def assign_training_weights(model: nnx.Module, arch: Arch, weights: dict) -> None:
    """Set the model's weights from `training_weights`' layout, each cast to the dtype the model holds it in."""
    for name, variable in _model_variables(model, arch).items():
        variable.set_value(weights[name].astype(variable.get_value().dtype))
    for i, layer in enumerate(model.layers):
        for name, get in _layer_variables(arch).items():
            variable = get(layer)
            variable.set_value(weights["layers"][name][i].astype(variable.get_value().dtype))


def _plain_einsum(spec: str, a, b):
    """`jnp.einsum` with f32 accumulation. bf16 operands are first arranged as YNNPACK takes them (XLA:CPU's only
    bf16 x bf16 -> f32 dot; the fallback rejects that type combination at run time): [batch, M, K] x
    [batch, K, N] with M, N > 1 and a dimension of at least 8. Other bf16 dots (vector products in a batch-1
    decode step) run in f32."""
    if a.dtype != jnp.bfloat16:
        return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)
    (sa, sb), out = spec.split("->")[0].split(","), spec.split("->")[1]
    batch = [i for i in out if i in sa and i in sb]
    m = [i for i in out if i in sa and i not in sb]
    n = [i for i in out if i in sb and i not in sa]
    k = [i for i in sa if i in sb and i not in out]
    size = {**dict(zip(sa, a.shape)), **dict(zip(sb, b.shape))}
    dims = [math.prod(size[i] for i in group) for group in (batch, m, k, n)]
    if dims[1] == 1 or dims[3] == 1 or max(dims[1:]) < 8:
        return jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32))
    lhs = _arranged(a, sa, batch + m + k).reshape(dims[0], dims[1], dims[2])
    rhs = _arranged(b, sb, batch + k + n).reshape(dims[0], dims[2], dims[3])
    res = jax.lax.dot_general(lhs, rhs, (((2,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)
    res = res.reshape([size[i] for i in batch + m + n])
    return jnp.einsum(f"{''.join(batch + m + n)}->{out}", res)


def _arranged(x, spec: str, order: list[str]):
    """x with its axes in `order`; a real transpose is materialised behind a barrier, or XLA folds it back into
    the dot's dimension numbers and the dot is no longer one YNNPACK takes."""
    if list(spec) == order:
        return x
    return jax.lax.optimization_barrier(jnp.transpose(x, [spec.index(i) for i in order]))


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """`a`, `b` of one dtype, f32 result; the backward dots take the cotangent in that dtype as well. `spec` is
    an explicit two-operand contraction ("ab,bc->ac") in which every index of an operand also appears in the
    other operand or the output (so each gradient is itself such an einsum)."""
    return _plain_einsum(spec, a, b)


def _einsum_fwd(spec, a, b):
    return _plain_einsum(spec, a, b), (a, b)


def _einsum_bwd(spec, res, g):
    a, b = res
    (sa, sb), out = spec.split("->")[0].split(","), spec.split("->")[1]
    g = g.astype(a.dtype)
    return (_plain_einsum(f"{out},{sb}->{sa}", g, b).astype(a.dtype),
            _plain_einsum(f"{sa},{out}->{sb}", a, g).astype(b.dtype))


einsum.defvjp(_einsum_fwd, _einsum_bwd)


def _rms_norm(x, w, eps: float):
    x = x.astype(jnp.float32)
    return w.astype(jnp.float32) * (x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps))


def rope_tables(positions, head_dim: int, theta: float):
    """sin, cos [B, T, 1, head_dim / 2] in f32 (bf16 angles would be wrong beyond position 256)."""
    fraction = 2 * jnp.arange(head_dim // 2, dtype=jnp.float32) / head_dim
    angle = positions.astype(jnp.float32)[..., None] / (theta**fraction)
    return jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]


def _rope(x, sin, cos):
    first, second = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def adapter_specs(spec: str) -> tuple[str, str, str]:
    """The einsums of a low-rank adapter (A, B) of the weight that `spec` applies: input x A ("btd,dr->btr"),
    then (x A) x B ("btr,rnh->btnh"), and A x B, the weight's update in the weight's own shape ("dr,rnh->dnh").
    A holds the weight's contracted axes and the rank r, B the rank and the weight's output axes."""
    (sa, sw), out = spec.split("->")[0].split(","), spec.split("->")[1]
    contracted = "".join(c for c in sw if c in sa)
    outputs = "".join(c for c in sw if c not in sa)
    kept = "".join(c for c in sa if c not in contracted)
    return f"{sa},{contracted}r->{kept}r", f"{kept}r,r{outputs}->{out}", f"{contracted}r,r{outputs}->{sw}"


def project(name: str, h, w: dict):
    """The layer's projection `name` of its input h (compute dtype) in f32, plus the low-rank update (h A) B where
    `w["adapters"]` holds one for it (LoRA training: the base weight is applied as it is, never merged)."""
    spec = PROJECTIONS[name].spec
    out = einsum(spec, h, w[name])
    adapter = w.get("adapters", {}).get(name)
    if adapter is None:
        return out
    a_spec, b_spec, _ = adapter_specs(spec)
    return out + einsum(b_spec, einsum(a_spec, h, adapter[0]).astype(h.dtype), adapter[1])


@dataclass(frozen=True)
class Segment:
    """Keys and values a layer's queries attend to, with their mask [B, T, S] (one softmax over all segments).
    `keys_spec` names the key layout: "bksh" ([B, K, S, D], heads-major) or "bkhs" ([B, K, D, S]: the decode
    cache, whose scores are then a sum over a leading axis that XLA:CPU vectorises along S)."""

    keys: jax.Array
    values: jax.Array
    mask: jax.Array
    keys_spec: str = "bksh"


# kv(k, v) -> (segments, carry): given this input's heads-major k, v [B, K, T, D], the segments the queries attend
# to and what the caller keeps (the updated cache, or k, v themselves).
KVPolicy = Callable[[jax.Array, jax.Array], tuple[list[Segment], object]]


def _attend(q, segments: list[Segment]):
    """Attention of q [B, T, K, G, D] (compute dtype, pre-scaled) over the segments; [B, T, K, G, D] f32."""
    scores = [
        jnp.where(s.mask[:, None, :, None, :], einsum(f"btkgh,{s.keys_spec}->bktgs", q.astype(s.keys.dtype), s.keys),
                  K_MASK)
        for s in segments
    ]
    probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)
    bounds = list(itertools.accumulate(s.keys.shape[-1 if s.keys_spec == "bkhs" else 2] for s in segments))[:-1]
    out = 0.0
    for p, s in zip(jnp.split(probs, bounds, axis=-1), segments):
        if s.keys_spec == "bkhs":
            # The decode step (T = 1, f32 cache, no gradient): a weighted sum over the cache's S axis reads the
            # values once, where the dot XLA:CPU emits for this shape (M = G = 3) runs ~10x slower (profiled).
            out = out + jnp.sum(p[..., None] * s.values[:, :, None, None], axis=-2).transpose(0, 2, 1, 3, 4)
        else:
            out = out + einsum("bktgs,bksh->btkgh", p.astype(s.values.dtype), s.values)
    return out


def layer(w: dict, x, rope, arch: Arch, kv: KVPolicy):
    """One decoder layer on the f32 residual stream x [B, T, D]."""
    cd = w["q"].dtype
    b, t, _ = x.shape
    heads, kv_heads, hd = arch.num_heads, arch.num_kv_heads, arch.head_dim
    h = _rms_norm(x, w["attn_norm"], arch.norm_eps).astype(cd)
    q, k, v = (project(name, h, w) for name in ("q", "k", "v"))
    if arch.qkv_bias:
        q = q + w["q_bias"].astype(jnp.float32).reshape(heads, hd)
        k = k + w["k_bias"].astype(jnp.float32).reshape(kv_heads, hd)
        v = v + w["v_bias"].astype(jnp.float32).reshape(kv_heads, hd)
    if arch.qk_norm:
        q = _rms_norm(q, w["q_norm"], arch.norm_eps)
        k = _rms_norm(k, w["k_norm"], arch.norm_eps)
    q = _rope(q, *rope) * hd**-0.5
    k = _rope(k, *rope)
    segments, carry = kv(k.swapaxes(1, 2).astype(cd), v.swapaxes(1, 2).astype(cd))
    out = _attend(q.astype(cd).reshape(b, t, kv_heads, heads // kv_heads, hd), segments)
    x = x + project("o", out.astype(cd).reshape(b, t, heads, hd), w)
    h = _rms_norm(x, w["mlp_norm"], arch.norm_eps).astype(cd)
    act = jax.nn.silu(project("gate", h, w)) * project("up", h, w)
    return x + project("down", act.astype(cd), w), carry


def embed(weights: dict, tokens):
    return weights["embed"][tokens].astype(jnp.float32)


def final_hidden(weights: dict, x, arch: Arch):
    """The final norm, in the compute dtype (what the vocabulary projection takes)."""
    return _rms_norm(x, weights["final_norm"], arch.norm_eps).astype(weights["head"].dtype)


def logits(weights: dict, h):
    """f32 vocabulary logits of final hidden states h [..., D]."""
    head = weights["head"]
    return einsum("nd,dv->nv", h.reshape(-1, h.shape[-1]), head).reshape(*h.shape[:-1], head.shape[-1])


def own(mask) -> KVPolicy:
    """Attend over this input's own keys (mask [B, T, T]); keep its k, v in f32. (The training scan stacks what
    a layer keeps over layers, and its backward pass stacks their cotangents: XLA:CPU writes a bf16 [L, ...] array
    slice by slice converting the whole array each time; an f32 one it updates in place.)"""
    return lambda k, v: ([Segment(k, v, mask)], (k.astype(jnp.float32), v.astype(jnp.float32)))


def after(past_k, past_v, past_mask, mask) -> KVPolicy:
    """Attend over `past` keys [B, K, P, D] (f32, past_mask [B, T, P]) and this input's own (mask [B, T, T])."""
    return lambda k, v: ([Segment(past_k.astype(k.dtype), past_v.astype(v.dtype), past_mask), Segment(k, v, mask)],
                         (k.astype(jnp.float32), v.astype(jnp.float32)))


def prefill_into(cache_k, cache_v, mask) -> KVPolicy:
    """Attend over this input's own keys and write them at the start of a preallocated cache (keys [B, K, D, S],
    values [B, K, S, D])."""

    def kv(k, v):
        new = (jax.lax.dynamic_update_slice(cache_k, k.swapaxes(2, 3).astype(cache_k.dtype), (0, 0, 0, 0)),
               jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, 0, 0, 0)))
        return [Segment(k, v, mask)], new

    return kv


def decode_in_place(cache_k, cache_v, write_at, mask) -> KVPolicy:
    """Write this input's k, v into the preallocated cache at `write_at` (the same index for every row: prompts
    are left-padded) and attend over the whole cache (mask [B, T, S])."""

    def kv(k, v):
        new = (jax.lax.dynamic_update_slice(cache_k, k.swapaxes(2, 3).astype(cache_k.dtype), (0, 0, 0, write_at)),
               jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, 0, write_at, 0)))
        return [Segment(new[0], new[1], mask, "bkhs")], new

    return kv


# The decode loop's cache is f32 whatever the compute dtype. XLA:CPU (jaxlib 0.10.2) updates an f32 cache in place
# but not a bf16 one: it runs a bf16 dynamic-update-slice in f32, converting the whole cache there and back, and
# every workaround tried (integer storage with bitcasts, scatter) copies the whole cache instead. Measured on one
# [8, 3, 4096, 64] cache, 1000 steps of update + read: f32 17 us/step, bf16 636, uint16 + bitcast 2765, scatter
# 3829 (`tests/test_llm.py` checks the compiled decode loop for cache-sized copies). The attention dots then read
# 4-byte keys, the same bytes per step as a bf16 cache plus the copy it would need.
CACHE_DTYPE = jnp.float32


def init_cache(arch: Arch, num_layers: int, batch: int, size: int) -> list[tuple[jax.Array, jax.Array]]:
    """Per-layer heads-major caches: keys [B, K, D, S] (see `Segment`), values [B, K, S, D]."""
    keys, values = (batch, arch.num_kv_heads, arch.head_dim, size), (batch, arch.num_kv_heads, size, arch.head_dim)
    return [(jnp.zeros(keys, CACHE_DTYPE), jnp.zeros(values, CACHE_DTYPE)) for _ in range(num_layers)]


def cached_forward(weights: dict, arch: Arch, tokens, positions, cache: list, write_at, mask):
    """Layers unrolled over per-layer caches (each updated in place by the decode loop). A multi-token input is a
    prefill written at the start of the cache (mask [B, T, S]: its first T columns are used); a single token is a
    decode step written at `write_at` (mask [B, 1, S] over the cache). Returns final hidden states [B, T, D] in the
    compute dtype and the new cache."""
    x = embed(weights, tokens)
    rope = rope_tables(positions, arch.head_dim, arch.rope_theta)
    t = tokens.shape[1]
    new_cache = []
    for w, (ck, cv) in zip(weights["layers"], cache):
        kv = decode_in_place(ck, cv, write_at, mask) if t == 1 else prefill_into(ck, cv, mask[:, :, :t])
        x, kv = layer(w, x, rope, arch, kv)
        new_cache.append(kv)
    return final_hidden(weights, x, arch), new_cache


def scanned_forward(weights: dict, stacked: dict, arch: Arch, tokens, positions, mask, past=None, past_mask=None,
                    policy=None, layer_dtype=None):
    """The layers as one `lax.scan` over stacked weights (training). `past` = stacked (k, v) [L, B, K, P, D]
    that the input continues (past_mask [B, T, P]; mask [B, T, T] over the input itself); returns final hidden
    states and this input's stacked (k, v). Each layer is rematerialised under `policy` (a
    `jax.checkpoint_policies` policy; None saves nothing). `stacked["adapters"]`, when present, holds LoRA
    adapters (`project`) stacked over layers like the weights. `layer_dtype`: cast each layer's weights to it
    inside the scan (the training step's f32 masters to the compute dtype), so their gradients are stacked in
    f32: XLA:CPU writes a bf16 [L, ...] gradient slice by slice converting the whole array each time (profiled:
    ≈ 0.8 s of a 12.7 s update)."""
    x = embed(weights, tokens)
    rope = rope_tables(positions, arch.head_dim, arch.rope_theta)

    @partial(jax.checkpoint, policy=policy)
    def body(x, scanned):
        w, pk, pv = scanned
        if layer_dtype is not None:
            w = jax.tree.map(lambda a: a.astype(layer_dtype), w)
        return layer(w, x, rope, arch, own(mask) if pk is None else after(pk, pv, past_mask, mask))

    pk, pv = past if past is not None else (None, None)
    x, kv = jax.lax.scan(body, x, (stacked, pk, pv))
    return final_hidden(weights, x, arch), kv
