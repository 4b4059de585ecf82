"""The JAX profiler LM: logits match transformers, the KV-cache sampler matches uncached greedy decoding,
seeded sampling is reproducible, EOS stops, and a 2-device mesh produces the same tokens."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from profilekit.llm.model import hidden_states, load_lm, project_logits
from profilekit.llm.sampler import Sampler, SamplingConfig
from tests.conftest import ROOT, TEST_DATA
from tests.tiny_llm import write_tiny_lm

TOL = 1e-4  # f32, max |logit difference| against torch


@pytest.fixture(scope="module")
def tiny_dir():
    return write_tiny_lm(TEST_DATA / "tiny-llama", "llama")


@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3", "gemma3"])
def tiny_family_dir(request):
    return write_tiny_lm(TEST_DATA / f"tiny-{request.param}-theta50k", request.param, rope_theta=50_000.0)


def _jax_logits(lm, ids):
    x = jnp.asarray([ids])
    mask = jnp.tril(jnp.ones((len(ids), len(ids)), bool))[None]
    h, _ = hidden_states(lm.model, x, jnp.arange(len(ids))[None], None, mask)
    return np.asarray(project_logits(lm.model, h))[0]


def _torch_logits(path, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def test_tiny_model_logits_match_transformers(tiny_family_dir):
    ids = list(np.random.default_rng(0).integers(3, 256, size=40))
    lm = load_lm(tiny_family_dir)
    assert getattr(lm.config, "rope_theta", 50_000.0) == 50_000.0  # gemma3 has local/global frequencies instead
    got, ref = _jax_logits(lm, ids), _torch_logits(tiny_family_dir, ids)
    assert np.abs(got - ref).max() < TOL
    assert (got.argmax(-1) == ref.argmax(-1)).all()


def test_rope_theta_fix_is_what_makes_them_match(tiny_dir):
    from tunix.models.llama3 import model as llama_lib

    ids = list(np.random.default_rng(1).integers(3, 256, size=40))
    lm = load_lm(tiny_dir)
    for layer in lm.model.layers:  # back to tunix's stock attention (RoPE theta fixed at 1e6)
        layer.attn.__class__ = llama_lib.Attention
    assert np.abs(_jax_logits(lm, ids) - _torch_logits(tiny_dir, ids)).max() > 100 * TOL


def _greedy_without_cache(lm, ids, n):
    ids = list(ids)
    for _ in range(n):
        ids.append(int(_jax_logits(lm, ids)[-1].argmax()))
    return ids[-n:]


def test_cached_left_padded_greedy_equals_uncached_decoding(tiny_family_dir):
    lm = load_lm(tiny_family_dir)
    sampler = Sampler(lm, eos_ids=[255], pad_id=0)
    prompts = [[5, 17, 42, 9, 100, 3, 77], [8, 8, 200]]  # different lengths: left padding must not leak
    out = sampler.generate(prompts, SamplingConfig(max_new_tokens=12, temperature=0.0, prompt_bucket=16))
    for prompt, tokens in zip(prompts, out.tokens):
        expected = _greedy_without_cache(lm, prompt, 12)
        stop = expected.index(255) if 255 in expected else len(expected)
        assert tokens == expected[:stop]


def test_seeded_sampling_is_reproducible_and_seed_dependent(tiny_dir):
    lm = load_lm(tiny_dir)
    sampler = Sampler(lm, eos_ids=[], pad_id=0)
    prompts = [[5, 17, 42], [9, 9, 9, 9]]
    cfg = SamplingConfig(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=3)
    first, again = sampler.generate(prompts, cfg), sampler.generate(prompts, cfg)
    assert first.tokens == again.tokens and all(len(t) == 16 for t in first.tokens)
    other = sampler.generate(prompts, SamplingConfig(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=4))
    assert other.tokens != first.tokens


def test_generation_stops_at_eos(tiny_dir):
    lm = load_lm(tiny_dir)
    greedy = SamplingConfig(max_new_tokens=8, temperature=0.0)
    free = Sampler(lm, eos_ids=[], pad_id=0).generate([[5, 6, 7]], greedy).tokens[0]
    stopped = Sampler(lm, eos_ids=[free[2]], pad_id=0).generate([[5, 6, 7]], greedy)
    cut = free.index(free[2])
    assert stopped.tokens[0] == free[:cut]
    assert stopped.stats["decode_steps"] <= cut + 1  # the loop ends once every row has emitted EOS


MESH_SCRIPT = """
import json, sys
import jax
from profilekit.llm.model import load_lm
from profilekit.llm.sampler import Sampler, SamplingConfig
from resources.compute import ComputeResource
path = sys.argv[1]
mesh = ComputeResource(platform="cpu", mesh_shape=[2, 1]).mesh()
prompts = [[5, 17, 42, 9], [8, 8, 200, 1], [3, 4, 5, 6], [100, 101, 102, 103]]
out = {"devices": len(jax.devices())}
for name, m in (("single", None), ("mesh", mesh)):
    lm = load_lm(path, mesh=m)
    s = Sampler(lm, eos_ids=[], pad_id=0, mesh=m)
    out[name] = [s.generate(prompts, SamplingConfig(max_new_tokens=10, temperature=t, seed=7)).tokens for t in (0.0, 1.0)]
    if m is not None:
        emb = lm.model.embedder.input_embedding.value
        out["sharded_devices"] = len(emb.sharding.device_set)
print(json.dumps(out))
"""


def test_two_device_mesh_gives_the_same_tokens(tiny_dir):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", MESH_SCRIPT, str(tiny_dir)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["sharded_devices"] == 2
    assert out["mesh"] == out["single"]


@pytest.mark.slow
def test_packaged_smollm2_logits_match_transformers():
    """The real profiler: JAX (tunix llama3 + RoPE fix) vs transformers on the same exported weights."""
    from transformers import AutoTokenizer

    from profilekit.llm.export import export_gguf_to_hf, packaged_gguf
    from resources.llm import packaged_weights_dir
    from resources.model_store import LocalModelStore

    store = LocalModelStore(root=str(TEST_DATA / "store"))  # the same export the asset tests use
    path = export_gguf_to_hf(packaged_gguf(store.source_cache), packaged_weights_dir(store))
    tok = AutoTokenizer.from_pretrained(str(path))
    text = "History: [Heat (1995) | 5], [Toy Story (1995) | 4], [Fargo (1996) | 5]. Summarise this user's taste."
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    got, ref = _jax_logits(load_lm(path), ids), _torch_logits(path, ids)
    assert np.abs(got - ref).max() < 1e-3
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.98
    assert json.loads((path / "config.json").read_text())["pad_token_id"] != tok.eos_token_id


def test_shared_prefill_samples_equal_repeated_prompts(tiny_dir):
    lm = load_lm(tiny_dir)
    sampler = Sampler(lm, eos_ids=[], pad_id=0)
    prompts = [[5, 17, 42, 9], [8, 200]]
    for cfg in (SamplingConfig(max_new_tokens=10, temperature=0.0), SamplingConfig(max_new_tokens=10, temperature=1.0, seed=2)):
        shared = sampler.generate(prompts, cfg, samples=3)
        repeated = sampler.generate([p for p in prompts for _ in range(3)], cfg)
        assert shared.tokens == repeated.tokens
        assert shared.prompt_tokens == [4, 4, 4, 2, 2, 2]
    assert len(set(map(tuple, shared.tokens[:3]))) > 1  # the samples of one prompt differ
