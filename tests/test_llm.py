"""The JAX profiler LM: logits match transformers (tunix's forward and ours, f32 and bf16), the KV-cache sampler
matches uncached greedy decoding, its decode loop copies no cache, seeded sampling is reproducible, EOS stops, and
a 2-device mesh produces the same tokens."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from profilekit.llm import forward
from profilekit.llm import sampler as sampler_lib
from profilekit.llm.model import hidden_states, load_lm, project_logits
from profilekit.llm.sampler import Sampler, SamplingConfig
from tests.conftest import ROOT, TEST_DATA
from tests.tiny_llm import write_tiny_lm

TOL = 1e-4  # f32, max |logit difference| against torch
# bf16 weights with f32 accumulation, max |logit difference| against torch f32 on the tiny models (logits up to
# ~2.5). Measured: 0.022-0.032; transformers' own bf16 run is 0.024-0.044 away from its f32 one.
BF16_TOL = 0.06
# The same on the packaged SmolLM2 (logits up to ~40). Measured on the 78-token prompt: 0.67, with 98.4 % greedy
# agreement over the 128 continuation positions; transformers' own bf16 run: 1.27 and 97.7 %.
SMOLLM2_BF16_TOL = 1.5


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


def _own_logits(lm, ids):
    """Our forward (`profilekit.llm.forward`) as the sampler's prefill runs it, every position projected."""
    arch = forward.arch_of(lm.model)
    weights = forward.weights_of(lm.model, arch)
    n = len(ids)
    cache = forward.init_cache(arch, len(weights["layers"]), 1, n)
    mask = jnp.tril(jnp.ones((n, n), bool))[None]
    h, _ = forward.cached_forward(weights, arch, jnp.asarray([ids]), jnp.arange(n)[None], cache, 0, mask)
    return np.asarray(forward.logits(weights, h))[0]


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


def test_own_forward_matches_transformers_in_f32_and_bf16(tiny_family_dir):
    lm = load_lm(tiny_family_dir)
    if forward.arch_of(lm.model) is None:
        pytest.skip("gemma3 keeps tunix's forward")
    ids = list(np.random.default_rng(0).integers(3, 256, size=40))
    ref = _torch_logits(tiny_family_dir, ids)
    got = _own_logits(lm, ids)
    assert np.abs(got - ref).max() < TOL
    bf16 = load_lm(tiny_family_dir, dtype="bfloat16")
    assert bf16.model.layers[0].attn.q_proj.w.value.dtype == jnp.bfloat16
    got = _own_logits(bf16, ids)
    assert np.abs(got - ref).max() < BF16_TOL
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.95


def test_rope_theta_fix_is_what_makes_them_match(tiny_dir):
    from tunix.models.llama3 import model as llama_lib

    ids = list(np.random.default_rng(1).integers(3, 256, size=40))
    lm = load_lm(tiny_dir)
    for layer in lm.model.layers:  # back to tunix's stock attention (RoPE theta fixed at 1e6)
        layer.attn.__class__ = llama_lib.Attention
    assert np.abs(_jax_logits(lm, ids) - _torch_logits(tiny_dir, ids)).max() > 100 * TOL


def _greedy_without_cache(lm, ids, n, width):
    """Greedy decoding by full forwards over `width` tokens, right-padded: the causal mask keeps the padding out of
    every real position, and one shape for every step and prompt means eager ops compile once, not once a length."""
    ids = list(ids)
    for _ in range(n):
        logits = _jax_logits(lm, ids + [0] * (width - len(ids)))
        ids.append(int(logits[len(ids) - 1].argmax()))
    return ids[-n:]


def test_cached_left_padded_greedy_equals_uncached_decoding(tiny_family_dir):
    lm = load_lm(tiny_family_dir)
    sampler = Sampler(lm, eos_ids=[255], pad_id=0)
    prompts = [[5, 17, 42, 9, 100, 3, 77], [8, 8, 200]]  # different lengths: left padding must not leak
    out = sampler.generate(prompts, SamplingConfig(max_new_tokens=12, temperature=0.0, prompt_bucket=16))
    for prompt, tokens in zip(prompts, out.tokens):
        expected = _greedy_without_cache(lm, prompt, 12, width=max(map(len, prompts)) + 12)
        stop = expected.index(255) if 255 in expected else len(expected)
        assert tokens == expected[:stop]


def _computations(hlo: str) -> dict[str, list[str]]:
    """Compiled HLO text -> {computation name: its instruction lines}."""
    out, name = {}, None
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head:
            name = head.group(1)
            out[name] = []
        elif name is not None and line.strip() and line.strip() != "}":
            out[name].append(line.strip())
    return out


def _cache_sized_work_in_decode_loop(hlo: str, cache_dims: tuple[int, ...]) -> list[str]:
    """Instructions inside the decode while-loop (its body and everything it calls) that produce a cache-shaped
    array other than by updating it in place: copies, transposes, converts, or fusions whose root is not a
    dynamic-update-slice."""
    comps = _computations(hlo)
    dims = "[" + ",".join(map(str, cache_dims)) + "]"
    loops = [line for lines in comps.values() for line in lines if " while(" in line and dims in line]
    assert len(loops) == 1, "expected one while-loop carrying the cache"
    shape = re.compile(r"= [a-z0-9]+" + re.escape(dims) + r"\{[^}]*\} ([\w\-]+)\(")
    seen, todo, bad = set(), [re.search(r"body=%([\w.\-]+)", loops[0]).group(1)], []
    while todo:
        name = todo.pop()
        if name in seen or name not in comps:
            continue
        seen.add(name)
        for line in comps[name]:
            todo += re.findall(r"(?:calls|to_apply|body|condition)=%([\w.\-]+)", line)
            m = shape.search(line)
            if not m or m.group(1) in ("parameter", "get-tuple-element", "bitcast", "dynamic-update-slice", "tuple"):
                continue
            called = re.search(r"calls=%([\w.\-]+)", line)
            roots = [x for x in comps.get(called.group(1), []) if x.startswith("ROOT")] if called else []
            if m.group(1) == "fusion" and roots and " dynamic-update-slice(" in roots[0]:
                continue
            bad.append(line[:160])
    return bad


def test_decode_loop_updates_the_kv_cache_in_place(tiny_dir, monkeypatch):
    """bf16 weights, heads-major f32 cache: no cache-sized copy, transpose or convert in the compiled decode loop.
    The same check on tunix's forward and [B, S, K, D] cache finds them, so it can fail."""
    lm = load_lm(tiny_dir, dtype="bfloat16")
    prompts, cache_size, config = 3, 48, lm.config

    def decode_hlo():
        s = Sampler(lm, eos_ids=[255], pad_id=0)
        args = (s.state, jnp.zeros((prompts, 16), jnp.int32), jnp.ones((prompts, 16), bool), s.eos_ids, jnp.int32(0),
                jax.random.PRNGKey(0))
        return s._generate.lower(*args, max_new=32, temperature=1.0, top_p=0.9, cache_size=cache_size,
                                 samples=1).compile().as_text()

    ours = (prompts, config.num_kv_heads, cache_size, config.head_dim)
    assert _cache_sized_work_in_decode_loop(decode_hlo(), ours) == []
    monkeypatch.setattr(sampler_lib, "decoder_of", sampler_lib._TunixDecoder)
    monkeypatch.setattr(sampler_lib, "_COMPILED", {})  # the program compiled above is shared by the model's structure
    tunix = (prompts, cache_size, config.num_kv_heads, config.head_dim)
    assert _cache_sized_work_in_decode_loop(decode_hlo(), tunix) != []


def test_bf16_sampler_follows_the_f32_one(tiny_dir):
    """bf16 weights at batch 1 (vector dots, run in f32) and batch 3 (bf16 matrix dots): greedy tokens agree with
    the f32 sampler's (measured: 100 %)."""
    cfg = SamplingConfig(max_new_tokens=12, temperature=0.0)
    f32, bf16 = (Sampler(load_lm(tiny_dir, dtype=d), eos_ids=[], pad_id=0) for d in ("float32", "bfloat16"))
    for prompts in ([[5, 17, 42, 9]], [[5, 17, 42, 9], [8, 200], [1, 2, 3]]):
        a, b = f32.generate(prompts, cfg).tokens, bf16.generate(prompts, cfg).tokens
        assert np.mean([x == y for r, s in zip(a, b) for x, y in zip(r, s)]) >= 0.9


def test_seeded_sampling_is_reproducible_and_seed_dependent(tiny_dir):
    lm = load_lm(tiny_dir)
    sampler = Sampler(lm, eos_ids=[], pad_id=0)
    prompts = [[5, 17, 42], [9, 9, 9, 9]]
    cfg = SamplingConfig(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=3)
    first, again = sampler.generate(prompts, cfg), sampler.generate(prompts, cfg)
    assert first.tokens == again.tokens and all(len(t) == 16 for t in first.tokens)
    other = sampler.generate(prompts, SamplingConfig(max_new_tokens=16, temperature=1.0, top_p=0.9, seed=4))
    assert other.tokens != first.tokens


def test_samplers_of_separately_loaded_copies_share_compiled_programs(tiny_dir):
    """A fresh copy of the same model (each trained checkpoint, each asset step) must not compile again."""
    prompts, cfg = [[5, 17, 42]], SamplingConfig(max_new_tokens=6, temperature=0.0)
    first, second = (Sampler(load_lm(tiny_dir), eos_ids=[], pad_id=0) for _ in range(2))
    assert first._generate is second._generate
    before = first._generate._cache_size()
    assert first.generate(prompts, cfg).tokens == second.generate(prompts, cfg).tokens
    assert first._generate._cache_size() == before + 1  # one program for both samplers


def test_generation_stops_at_eos(tiny_dir):
    lm = load_lm(tiny_dir)
    greedy = SamplingConfig(max_new_tokens=8, temperature=0.0)
    free = Sampler(lm, eos_ids=[], pad_id=0).generate([[5, 6, 7]], greedy).tokens[0]
    stopped = Sampler(lm, eos_ids=[free[2]], pad_id=0).generate([[5, 6, 7]], greedy)
    cut = free.index(free[2])
    assert stopped.tokens[0] == free[:cut]
    assert stopped.stats["decode_steps"] <= cut + 1  # the loop ends once every row has emitted EOS


def test_two_device_mesh_gives_the_same_tokens(tiny_dir):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.processes.mesh_sampling", str(tiny_dir)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
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


@pytest.mark.slow
def test_packaged_smollm2_bf16_follows_transformers_f32():
    """bf16 weights with f32 accumulation (our forward) against transformers f32 on the real profiler: logits
    within SMOLLM2_BF16_TOL on a chat prompt, and, teacher-forced along transformers' own 128-token greedy
    continuation, the same greedy token at >= 95 % of those positions."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from profilekit.llm.export import export_gguf_to_hf, packaged_gguf
    from resources.llm import packaged_weights_dir
    from resources.model_store import LocalModelStore

    store = LocalModelStore(root=str(TEST_DATA / "store"))
    path = export_gguf_to_hf(packaged_gguf(store.source_cache), packaged_weights_dir(store))
    tok = AutoTokenizer.from_pretrained(str(path))
    text = "History: [Heat (1995) | 5], [Toy Story (1995) | 4], [Fargo (1996) | 5]. Summarise this user's taste."
    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    torch_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        full = torch_model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                    max_new_tokens=128, min_new_tokens=128, do_sample=False, pad_token_id=0)[0]
        ref = torch_model(full[None]).logits[0].numpy()
    got = _own_logits(load_lm(path, dtype="bfloat16"), full.tolist())
    assert np.abs(got[: len(ids)] - ref[: len(ids)]).max() < SMOLLM2_BF16_TOL
    continuation = slice(len(ids) - 1, len(ids) + 127)  # the positions that predict the 128 new tokens
    assert (got[continuation].argmax(-1) == ref[continuation].argmax(-1)).mean() >= 0.95


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


def _sorted_nucleus(logits: np.ndarray, top_p: float) -> np.ndarray:
    """The textbook nucleus: sort, cumulate, keep every logit at or above the last one needed to reach top_p."""
    order = np.sort(logits, axis=-1)[:, ::-1].astype(np.float64)
    probs = np.exp(order - order[:, :1])
    probs /= probs.sum(-1, keepdims=True)
    needed = np.sum(np.cumsum(probs, -1) - probs < top_p, -1) - 1
    return logits >= order[np.arange(len(logits)), needed][:, None]


@pytest.mark.parametrize("scale", [0.1, 1.0, 8.0])  # flat (nucleus of thousands of tokens) to peaked (a handful)
def test_nucleus_mask_matches_sorting(scale):
    rng = np.random.default_rng(int(scale * 10))
    logits = (rng.standard_normal((6, 4096)) * scale).astype(np.float32)
    logits[0, :7] = logits[0].max() + 1  # ties at the top
    logits[1] = np.round(logits[1])  # many ties at the cutoff
    for top_p in (0.5, 0.9, 0.95):
        got = np.asarray(jax.jit(sampler_lib.nucleus_mask, static_argnums=1)(jnp.asarray(logits), top_p))
        want = _sorted_nucleus(logits, top_p)
        assert (got == want).all(), (top_p, got.sum(-1), want.sum(-1))
        assert got.sum(-1).min() >= 1


def _segments(tokens: list[int], forced: list[bool]) -> list[tuple[bool, list[int]]]:
    """Runs of forced and free tokens, in order."""
    runs: list[tuple[bool, list[int]]] = []
    for token, flag in zip(tokens, forced):
        if runs and runs[-1][0] == flag:
            runs[-1][1].append(token)
        else:
            runs.append((flag, [token]))
    return runs


def test_a_scaffold_writes_its_sequences_around_budgeted_free_segments(tiny_dir):
    """With no stop token but padding (id 0, which these seeded samples never draw) every free segment runs to its
    budget; the forced sequences come in order, are flagged, and end the completion."""
    sampler = Sampler(load_lm(tiny_dir), eos_ids=[], pad_id=0)
    scaffold = sampler_lib.Scaffold(forced=((11, 12), (13,), (14, 15, 16)), budgets=(4, 3), stop_ids=())
    cfg = SamplingConfig(max_new_tokens=2, temperature=1.0, top_p=1.0, seed=1, scaffold=scaffold)
    out = sampler.generate([[5, 17, 42], [9, 9, 9, 9]], cfg, samples=3)
    assert len(out.tokens) == 6
    for tokens, forced, stop in zip(out.tokens, out.forced, out.stops):
        runs = _segments(tokens, forced)
        assert [flag for flag, _ in runs] == [True, False, True, False, True]
        assert [run for flag, run in runs if flag] == [[11, 12], [13], [14, 15, 16]]
        assert [len(run) for flag, run in runs if not flag] == [4, 3]  # the scaffold's length, not max_new_tokens
        assert stop is None


def test_a_scaffold_segment_ends_where_the_model_samples_a_stop_token_and_is_never_empty(tiny_dir):
    """Every token but 7 and 8 stops a segment, and 8 is blank: the first token of a segment is sampled with the
    stop and blank tokens masked, so it is 7, and a sampled stop token is replaced by the next forced sequence,
    never kept."""
    lm = load_lm(tiny_dir)
    stops = tuple(t for t in range(lm.model.config.vocab_size) if t not in (7, 8))
    sampler = Sampler(lm, eos_ids=[3], pad_id=0)
    scaffold = sampler_lib.Scaffold(forced=((11,), (12,), (13,)), budgets=(5, 5), stop_ids=stops, blank_ids=(8,))
    out = sampler.generate([[5, 17, 42], [9, 9, 9, 9]], SamplingConfig(temperature=1.0, top_p=1.0, seed=2,
                                                                       scaffold=scaffold), samples=4)
    for tokens, forced in zip(out.tokens, out.forced):
        runs = _segments(tokens, forced)
        assert [run for flag, run in runs if flag] == [[11], [12], [13]]
        free = [run for flag, run in runs if not flag]
        assert len(free) == 2 and all(1 <= len(run) <= 5 and run[0] == 7 and set(run) <= {7, 8} for run in free)


def test_a_scaffold_changes_the_generation_cache_key_and_no_scaffold_keeps_the_old_keys():
    import hashlib
    from dataclasses import asdict

    from profilekit.profiler import GenerationCache

    config, prompt = SamplingConfig(max_new_tokens=96, temperature=0.7, top_p=0.95, seed=0), [1, 2, 3]
    settings = {k: v for k, v in asdict(config).items() if k != "scaffold"}  # the key before scaffolds existed
    old = hashlib.sha256(json.dumps([settings, prompt], sort_keys=True).encode()).hexdigest()[:32]
    assert GenerationCache.key(prompt, config) == old  # every cached profile stays valid
    scaffolded = SamplingConfig(max_new_tokens=96, temperature=0.7, top_p=0.95, seed=0,
                                scaffold=sampler_lib.Scaffold(((1,), (2,)), (4,), (5,)))
    assert GenerationCache.key(prompt, scaffolded) != old


def test_a_scaffold_is_fitted_to_the_completion_budget_in_proportion_and_keeps_a_token_per_field():
    scaffold = sampler_lib.Scaffold(forced=((11, 12), (13,), (14, 15, 16)), budgets=(4, 3), stop_ids=(9,))
    assert scaffold.fit(13) is scaffold and scaffold.max_tokens == 13
    assert scaffold.fit(10).budgets == (2, 1) and scaffold.fit(10).stop_ids == (9,)  # 4 tokens of room, 4:3
    assert scaffold.fit(3).budgets == (1, 1)  # no room left: one token per field still


def test_a_scaffold_may_not_force_a_token_that_ends_the_completion(tiny_dir):
    sampler = Sampler(load_lm(tiny_dir), eos_ids=[3], pad_id=0)
    ending = sampler_lib.Scaffold(forced=((11,), (3,)), budgets=(2,), stop_ids=())
    with pytest.raises(ValueError, match="must not end a completion"):
        sampler.generate([[5, 6]], SamplingConfig(scaffold=ending))
