"""Load an HF-layout checkpoint into tunix's JAX model family and run its forward pass without full logits.

Traps of tunix 0.1.7 handled here (measured, see DATA.md): llama3 attention ignores the configured RoPE theta
(always 1e6; SmolLM2 needs 1e5), and the tied embedding table must be the input embedding.
"""

from __future__ import annotations

import contextvars
import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx
from tunix.models.llama3 import model as llama_lib
from tunix.models.llama3 import params as llama_params

_ROPE_THETA: contextvars.ContextVar[float | None] = contextvars.ContextVar("rope_theta", default=None)
_TUNIX_APPLY_ROPE = llama_lib.apply_rope


def _apply_rope_with_theta(inputs, positions, head_dim, rope_theta=1_000_000):
    theta = _ROPE_THETA.get()
    return _TUNIX_APPLY_ROPE(inputs, positions, head_dim=head_dim, rope_theta=rope_theta if theta is None else theta)


llama_lib.apply_rope = _apply_rope_with_theta


class ThetaAttention(llama_lib.Attention):
    """tunix's llama3 attention, but rotating with `config.rope_theta` (read while the block is traced)."""

    def block(self, x, segment_pos, cache, attn_mask):
        token = _ROPE_THETA.set(float(self.config.rope_theta))
        try:
            return super().block(x, segment_pos, cache, attn_mask)
        finally:
            _ROPE_THETA.reset(token)


@dataclass(frozen=True)
class LoadedLM:
    model: nnx.Module
    config: llama_lib.ModelConfig
    family: str
    path: Path


def llama_config_from_hf(hf: dict) -> llama_lib.ModelConfig:
    rope = hf.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
    return llama_lib.ModelConfig(
        num_layers=hf["num_hidden_layers"],
        vocab_size=hf["vocab_size"],
        embed_dim=hf["hidden_size"],
        hidden_dim=hf["intermediate_size"],
        num_heads=hf["num_attention_heads"],
        head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads", hf["num_attention_heads"]),
        rope_theta=theta,
        norm_eps=hf.get("rms_norm_eps", 1e-5),
        weight_tying=bool(hf.get("tie_word_embeddings", False)),
    )


def load_lm(path: Path | str, dtype: str = "float32", mesh: jax.sharding.Mesh | None = None) -> LoadedLM:
    """Load an HF-layout directory (config.json + *.safetensors) with tunix; never touches a hub."""
    path = Path(path)
    hf = json.loads((path / "config.json").read_text())
    family = hf.get("model_type")
    if family != "llama":
        raise ValueError(f"{path}: model_type {family!r} is not supported yet (supported: llama)")
    config = llama_config_from_hf(hf)
    model = llama_params.create_model_from_safe_tensors(str(path), config, mesh=mesh, dtype=jnp.dtype(dtype))
    for layer in model.layers:
        layer.attn.__class__ = ThetaAttention
    return LoadedLM(model=model, config=config, family="llama3", path=path)


def init_cache(config: llama_lib.ModelConfig, batch: int, size: int, dtype) -> dict:
    shape = (batch, size, config.num_kv_heads, config.head_dim)
    return {
        f"layer_{i}": {
            "k": jnp.zeros(shape, dtype),
            "v": jnp.zeros(shape, dtype),
            "end_index": jnp.zeros((batch,), jnp.int32),
        }
        for i in range(config.num_layers)
    }


def hidden_states(model: nnx.Module, tokens, positions, cache, mask):
    """The decoder stack up to the final norm: tunix's forward minus the vocabulary projection."""
    x = model.embedder.encode(tokens)
    new_cache = None if cache is None else {}
    for i, layer in enumerate(model.layers):
        layer_cache, x = layer(x, positions, None if cache is None else cache[f"layer_{i}"], mask)
        if cache is not None:
            new_cache[f"layer_{i}"] = layer_cache
    return model.final_norm(x), new_cache


def project_logits(model: nnx.Module, h):
    """Vocabulary logits of selected hidden states only (never the whole [B, L, V] tensor unless asked)."""
    if model.config.weight_tying:
        return model.embedder.decode(h)
    return model.lm_head(h)
