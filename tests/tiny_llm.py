"""Tiny random-init causal LMs in HF layout, for fast tests of the JAX model and sampler."""

from __future__ import annotations

import json
from pathlib import Path


def write_tiny_lm(directory: Path, family: str = "llama", rope_theta: float = 100_000.0, tied: bool = True,
                  seed: int = 0) -> Path:
    """`family`: llama, qwen2, qwen3 or gemma3 (all in tunix); a non-default RoPE theta exercises the theta fix."""
    import torch
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    if (directory / "config.json").exists():
        return directory
    torch.manual_seed(seed)
    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
        "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM),
    }[family]
    config = config_cls(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        tie_word_embeddings=tied,
        rms_norm_eps=1e-5,
    )
    if family == "gemma3":  # six layers: five sliding-window (window 16) and one global attention layer
        config = Gemma3TextConfig(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
            max_position_embeddings=1024,
        )
    model = model_cls(config).eval()
    with torch.no_grad():  # random init gives near-uniform logits; widen them so argmax is decisive
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    model.save_pretrained(directory)
    return directory


def write_tiny_chat_lm(directory: Path, tokenizer_dir: Path, seed: int = 0, embedding_scale: float = 1.0) -> Path:
    """A tiny random-init llama with a real chat tokenizer (the exported SmolLM2's files, same vocabulary), so
    ChatLM, the sampler and the GRPO trainer run end to end in seconds. At the default init (std 0.02) the tied
    embeddings make the logits nearly uniform whatever the hidden state; `embedding_scale` widens them, so that
    what the layers compute (and adapters on their projections) moves the next-token distribution."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (directory / "config.json").exists():
        return directory
    torch.manual_seed(seed)
    vocab = json.loads((tokenizer_dir / "config.json").read_text())["vocab_size"]
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 100_000.0}, rms_norm_eps=1e-5,
        eos_token_id=json.loads((tokenizer_dir / "config.json").read_text()).get("eos_token_id"),
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(embedding_scale)
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, directory / name)
    return directory


def tiny_run_resources(chat_dir: Path, seed: int | None = None, judge: bool = True) -> dict:
    """A run config's `resources` that put the tiny chat LM in place of the packaged SmolLM2: as the profiler (16 new
    tokens; `seed`: a sampling seed of the test's own, so that its profiles are new to the worker's generation cache
    whatever ran before) and, with `judge`, as the QA judge. For graph tests whose checks do not depend on what the
    model writes; the real SmolLM2 runs end to end in tests/test_real_data.py."""
    profiler = {"weights_dir": str(chat_dir), "max_new_tokens": 16, **({"seed": seed} if seed is not None else {})}
    resources = {"profiler_llm": {"config": profiler}}
    if judge:
        resources["judge_llm"] = {"config": {"weights_dir": str(chat_dir)}}
    return resources
