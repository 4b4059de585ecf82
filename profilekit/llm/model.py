"""Load an HF-layout checkpoint into tunix's JAX model family and run its forward pass without full logits.

Families: llama (tunix llama3), qwen2, qwen3 and gemma3 (text). Trap of tunix 0.1.7 handled here (measured, see DATA.md): attention
ignores the configured RoPE theta (always 1e6; SmolLM2 needs 1e5).
"""

from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.models.gemma3 import model as gemma3_lib
from tunix.models.gemma3 import params_safetensors as gemma3_params
from tunix.models.llama3 import model as llama_lib
from tunix.models.llama3 import params as llama_params
from tunix.models.qwen2 import model as qwen2_lib
from tunix.models.qwen2 import params as qwen2_params
from tunix.models.qwen3 import model as qwen3_lib
from tunix.models.qwen3 import params as qwen3_params

_ROPE_THETA: contextvars.ContextVar[float | None] = contextvars.ContextVar("rope_theta", default=None)


def _theta_aware(tunix_apply_rope):
    def apply_rope(inputs, positions, head_dim, rope_theta=1_000_000):
        theta = _ROPE_THETA.get()
        return tunix_apply_rope(inputs, positions, head_dim=head_dim, rope_theta=rope_theta if theta is None else theta)

    return apply_rope


def _theta_attention(attention_cls):
    """tunix's attention of a family, rotating with `config.rope_theta` (read while the block is traced)."""

    class ThetaAttention(attention_cls):
        def block(self, *args, **kwargs):
            token = _ROPE_THETA.set(float(self.config.rope_theta))
            try:
                return super().block(*args, **kwargs)
            finally:
                _ROPE_THETA.reset(token)

    ThetaAttention.__name__ = ThetaAttention.__qualname__ = f"Theta{attention_cls.__name__}"
    return ThetaAttention


def _hf_common(hf: dict) -> dict:
    rope = hf.get("rope_parameters") or {}
    return {
        "num_layers": hf["num_hidden_layers"],
        "vocab_size": hf["vocab_size"],
        "embed_dim": hf["hidden_size"],
        "hidden_dim": hf["intermediate_size"],
        "num_heads": hf["num_attention_heads"],
        "head_dim": hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        "num_kv_heads": hf.get("num_key_value_heads", hf["num_attention_heads"]),
        "rope_theta": rope.get("rope_theta", hf.get("rope_theta", 10_000.0)),
        "norm_eps": hf.get("rms_norm_eps", 1e-6),
    }


@dataclass(frozen=True)
class Family:
    model_lib: object
    params_lib: object
    tie_field: str
    theta_attention: type | None


def _family(model_lib, params_lib, tie_field: str, theta_fix: bool = True) -> Family:
    if not theta_fix:
        return Family(model_lib, params_lib, tie_field, None)
    # tunix 0.1.7's llama3/qwen3 attention calls apply_rope without the configured theta (always 1e6): route it
    # through the context variable that the theta-aware attention sets.
    model_lib.apply_rope = _theta_aware(model_lib.apply_rope)
    return Family(model_lib, params_lib, tie_field, _theta_attention(model_lib.Attention))


# HF `model_type` -> tunix family. Only families whose loading is tested against transformers are listed.
FAMILIES = {
    "llama": _family(llama_lib, llama_params, "weight_tying"),
    "qwen3": _family(qwen3_lib, qwen3_params, "use_tied_embedding"),
    # qwen2 layers take sin/cos precomputed from the configured theta: no fix needed.
    "qwen2": _family(qwen2_lib, qwen2_params, "use_tied_embedding", theta_fix=False),
    # gemma3 (text): local/global RoPE frequencies come from its own config fields; embeddings are always tied.
    "gemma3_text": Family(gemma3_lib, gemma3_params, "", None),
}


@dataclass(frozen=True)
class LoadedLM:
    model: nnx.Module
    config: object
    family: str
    path: Path


def _gemma3_config_from_hf(hf: dict, dtype) -> gemma3_lib.ModelConfig:
    rope = hf.get("rope_parameters") or {}
    local = (rope.get("sliding_attention") or {}).get("rope_theta", hf.get("rope_local_base_freq", 10_000.0))
    full = rope.get("full_attention") or {}
    norm = gemma3_lib.QueryPreAttentionNormalisation
    scalar = hf.get("query_pre_attn_scalar", hf["head_dim"])
    if scalar == hf["head_dim"]:
        query_norm = norm.BY_ONE_OVER_SQRT_HEAD_DIM
    elif scalar == hf["hidden_size"] // hf["num_attention_heads"]:
        query_norm = norm.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS
    else:
        raise ValueError(f"gemma3 query_pre_attn_scalar {scalar} has no tunix equivalent")
    return gemma3_lib.ModelConfig(
        num_layers=hf["num_hidden_layers"],
        num_embed=hf["vocab_size"],
        embed_dim=hf["hidden_size"],
        hidden_dim=hf["intermediate_size"],
        num_heads=hf["num_attention_heads"],
        head_dim=hf["head_dim"],
        num_kv_heads=hf["num_key_value_heads"],
        sliding_window_size=hf.get("sliding_window"),
        local_base_frequency=local,
        global_base_frequency=full.get("rope_theta", hf.get("rope_theta", 1_000_000.0)),
        global_scale_factor=float(full.get("factor", 1.0)),
        query_pre_attn_norm=query_norm,
        param_dtype=dtype,
    )


def model_config_from_hf(hf: dict, dtype=jnp.float32):
    if hf["model_type"] == "gemma3_text":
        return _gemma3_config_from_hf(hf, dtype)
    family = FAMILIES[hf["model_type"]]
    return family.model_lib.ModelConfig(**_hf_common(hf), **{family.tie_field: bool(hf.get("tie_word_embeddings", False))})


def load_lm(path: Path | str, dtype: str = "float32", mesh: jax.sharding.Mesh | None = None) -> LoadedLM:
    """Load an HF-layout directory (config.json + *.safetensors) with tunix; never touches a hub."""
    path = Path(path)
    hf = json.loads((path / "config.json").read_text())
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(f"{path}: model_type {model_type!r} is not supported (supported: {sorted(FAMILIES)})")
    family = FAMILIES[model_type]
    config = model_config_from_hf(hf, jnp.dtype(dtype))
    model = family.params_lib.create_model_from_safe_tensors(str(path), config, mesh=mesh, dtype=jnp.dtype(dtype))
    if family.theta_attention is not None:
        for layer in model.layers:
            layer.attn.__class__ = family.theta_attention
    return LoadedLM(model=model, config=config, family=model_type, path=path)


def init_cache(config, batch: int, size: int, dtype) -> dict:
    shape = (batch, size, config.num_kv_heads, config.head_dim)
    return {
        f"layer_{i}": {
            "k": jnp.zeros(shape, dtype),
            "v": jnp.zeros(shape, dtype),
            "end_index": jnp.zeros((batch,), jnp.int32),
        }
        for i in range(config.num_layers)
    }


def _embed(model: nnx.Module, tokens):
    if isinstance(model, gemma3_lib.Gemma3):  # scales embeddings by sqrt(embed_dim)
        return model._encode_and_get_inputs(tokens=tokens)
    return model.embedder.encode(tokens)


def _rope_args(model: nnx.Module, positions, dtype):
    """qwen2 layers take sin/cos precomputed from the configured theta instead of positions."""
    if not isinstance(model, qwen2_lib.Qwen2):
        return None
    sin, cos = qwen2_lib._generate_pos_embeddings(positions, model.config.head_dim, model.config.rope_theta)
    return sin.astype(dtype), cos.astype(dtype)


def _layer_call(layer, x, positions, cache, mask, rope_args):
    if rope_args is not None:
        return layer(x, cache, mask, *rope_args)
    return layer(x, positions, cache, mask)


def hidden_states(model: nnx.Module, tokens, positions, cache, mask):
    """The decoder stack up to the final norm: tunix's forward minus the vocabulary projection."""
    x = _embed(model, tokens)
    rope_args = _rope_args(model, positions, x.dtype)
    new_cache = None if cache is None else {}
    for i, layer in enumerate(model.layers):
        layer_cache = None if cache is None else cache[f"layer_{i}"]
        layer_cache, x = _layer_call(layer, x, positions, layer_cache, mask, rope_args)
        if cache is not None:
            new_cache[f"layer_{i}"] = layer_cache
    return model.final_norm(x), new_cache


def project_logits(model: nnx.Module, h):
    """Vocabulary logits of selected hidden states only (never the whole [B, L, V] tensor unless asked)."""
    tied = ("weight_tying", "use_tied_embedding")
    if isinstance(model, gemma3_lib.Gemma3) or any(getattr(model.config, t, False) for t in tied):
        return model.embedder.decode(h)
    return model.lm_head(h)
