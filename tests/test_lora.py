"""LoRA (profilekit.llm.lora) on tiny models: the adapter step's loss and gradients against a merged model
differentiated by JAX, the first LoRA update against the full fine-tune, a checkpoint that merges back into the
same weights, and a LoRA training run that changes only the adapted projections and resumes."""

import json
import subprocess
import sys
from dataclasses import asdict

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from profilekit.checkpoints import CheckpointStore, load_trained_policy
from profilekit.llm.grpo_step import PolicyTrainer, StepGeometry, completion_logps, grpo_loss
from profilekit.llm.lora import AdapterTrainer, LoraConfig, applied, init_adapters
from profilekit.llm.model import load_lm
from profilekit.methods import METHODS
from profilekit.profiler import ChatLM
from profilekit.training import GRPOConfig, RewardModels, train_profiler
from tests.conftest import ROOT, TEST_DATA
from tests.test_grpo import G, _batch
from tests.test_training import ScriptedJudge, _data
from tests.tiny_llm import write_tiny_lm


def _random_adapters(model, config: LoraConfig, seed: int = 1) -> dict:
    """Adapters with a non-zero B, so that both A and B get gradients and the update is not zero."""
    adapters = init_adapters(model, config, jax.random.PRNGKey(seed))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), len(adapters)))
    return {name: {"a": ab["a"], "b": 0.05 * jax.random.normal(next(keys), ab["b"].shape)} for name, ab in adapters.items()}


def _flat(model) -> dict[str, np.ndarray]:
    """Every parameter of `model` by path ("['layers'][0]['attn']['q_proj']['w']"), copied to numpy."""
    return {jax.tree_util.keystr(path).removesuffix(".value"): np.array(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))}


PATHS = {"q": "['attn']['q_proj']['w']", "k": "['attn']['k_proj']['w']", "v": "['attn']['v_proj']['w']",
         "o": "['attn']['o_proj']['w']", "gate": "['mlp']['gate_proj']['kernel']", "up": "['mlp']['up_proj']['kernel']",
         "down": "['mlp']['down_proj']['kernel']"}


def _merged_by_hand(base: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float):
    """W + scale · A·B, the rank axis being A's last and B's first."""
    return base + scale * np.tensordot(a, b, axes=1)


@pytest.mark.fast
@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_adapter_loss_and_gradients_equal_those_of_the_merged_model(family):
    """Adapters applied unmerged in our forward vs. jax.grad of the plain GRPO loss of a model whose weights are
    W + alpha/r · A·B (adapters on some projections only, o's with two contracted axes among them)."""
    model = load_lm(write_tiny_lm(TEST_DATA / f"tiny-{family}", family)).model
    config = LoraConfig(rank=3, alpha=6.0, targets=("q", "v", "o", "down"))
    adapters = _random_adapters(model, config)
    prompt, valid, completion, mask, adv, ref = map(jnp.asarray, _batch())
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(logps):
        return grpo_loss(logps, ref, adv, mask, epsilon=0.2, beta=0.01)[0]

    def ours(ad):
        return loss(completion_logps(model, prompt, valid, completion, samples=G, chunk=3, temperature=0.8,
                                     adapters=applied(ad, config, jnp.float32)))

    adapted = {f"['layers'][{i}]{PATHS[name]}": (name, i) for i in range(len(model.layers)) for name in config.targets}

    def merged(ad):
        def weight(path, w):
            name, i = adapted.get(jax.tree_util.keystr(path).removesuffix(".value"), (None, None))
            return w if name is None else w + config.scale * jnp.tensordot(ad[name]["a"][i], ad[name]["b"][i], axes=1)

        m = nnx.merge(graphdef, jax.tree_util.tree_map_with_path(weight, params), rest)
        return loss(completion_logps(m, prompt, valid, completion, samples=G, chunk=3, temperature=0.8))

    step = jax.jit(jax.value_and_grad(ours))
    loss_o, grad_o = step(adapters)
    loss_m, grad_m = jax.jit(jax.value_and_grad(merged))(adapters)
    assert float(loss_o) == pytest.approx(float(loss_m), rel=1e-5, abs=1e-7)
    # B = 0 makes every adapted weight W + s·A·0 = W: the base model's loss, without compiling a third program
    base_loss = float(step({name: {"a": ad["a"], "b": jnp.zeros_like(ad["b"])} for name, ad in adapters.items()})[0])
    assert abs(float(loss_o) - base_loss) > 1e-4  # the adapters do change the policy
    for name in config.targets:
        for part in ("a", "b"):
            g_o, g_m = grad_o[name][part], grad_m[name][part]
            scale = float(jnp.abs(g_m).max())
            assert scale > 0, (name, part)
            assert float(jnp.abs(g_o - g_m).max()) <= 1e-5 * scale, (name, part)


@pytest.mark.fast
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_first_lora_update_has_the_full_fine_tune_loss_and_leaves_the_base_alone(dtype):
    """B starts at zero, so the first LoRA step sees the base model as policy and reference, as the first full
    fine-tune step does: same loss and terms. Its update moves B only (A gets no gradient while B is zero) and
    the sampler's merged weights change, the trainer's base does not."""
    path = write_tiny_lm(TEST_DATA / "tiny-qwen2", "qwen2")
    prompt, valid, completion, mask, adv, _ = _batch()
    geometry = StepGeometry(samples=G, epsilon=0.2, beta=0.01, chunk=4, temperature=0.8, compute_dtype=dtype)
    tx = optax.adamw(1e-2)
    full = PolicyTrainer(load_lm(path).model, tx, geometry).step(prompt, valid, completion, mask, adv)

    model = load_lm(path).model
    before = _flat(model)
    config = LoraConfig(rank=4, alpha=8.0)
    trainer = AdapterTrainer(model, optax.sgd(1e-2), geometry, config, seed=3)
    a_before = jax.tree.map(np.array, trainer.params)
    aux = trainer.step(prompt, valid, completion, mask, adv)
    for key in ("loss", "pg_loss", "kl", "clip_fraction"):
        assert aux[key] == pytest.approx(full[key], rel=1e-6, abs=1e-7), key
    assert aux["kl"] == 0.0 and aux["grad_norm"] > 0
    for name in config.targets:
        np.testing.assert_array_equal(np.asarray(trainer.params[name]["a"]), a_before[name]["a"])
        assert np.abs(np.asarray(trainer.params[name]["b"])).max() > 0, name
    # The trainer's base (its reference) is the model's weights as loaded, in the compute dtype, untouched by the step.
    q0 = "['layers'][0]" + PATHS["q"]
    np.testing.assert_array_equal(np.asarray(trainer.base["layers"]["q"][0], np.float32),
                                  np.asarray(jnp.asarray(before[q0]).astype(dtype), np.float32))
    trainer.write_into(model)
    after = _flat(model)
    assert not np.array_equal(after[q0], before[q0])
    assert {k for k in before if not np.array_equal(before[k], after[k])} == {
        f"['layers'][{i}]{PATHS[name]}" for i in range(len(model.layers)) for name in config.targets}


@pytest.mark.fast
def test_the_lora_step_computes_no_weight_gradients_of_the_base():
    """The full step's dots are about five passes over the weights (reference forward, forward, rematerialised
    forward, dX and dW of the backward); without the base weights' dW the LoRA step needs about four (measured on
    the tiny llama: 0.76 of the full step's compiled flops in f32, 0.73 in bf16, adapters on q)."""
    path = write_tiny_lm(TEST_DATA / "tiny-llama", "llama")
    batch = _batch()[:5]
    for dtype in ("float32", "bfloat16"):
        geometry = StepGeometry(samples=G, epsilon=0.2, beta=0.01, chunk=4, compute_dtype=dtype)
        full = PolicyTrainer(load_lm(path).model, optax.adamw(1e-3), geometry)
        full_flops = full._step.lower(full.params, full.rest, full.opt_state, full.ref_params, batch).compile().cost_analysis()["flops"]
        lora = AdapterTrainer(load_lm(path).model, optax.adamw(1e-3), geometry, LoraConfig(4, 8.0, ("q",)))
        lora_flops = lora._step.lower(lora.params, lora.opt_state, lora.base, batch).compile().cost_analysis()["flops"]
        assert lora_flops < 0.85 * full_flops, (dtype, lora_flops, full_flops)


@pytest.mark.fast
def test_a_lora_checkpoint_loads_as_the_base_plus_its_merged_adapters(tiny_chat_dir, tmp_path):
    chat = ChatLM(tiny_chat_dir)
    config = LoraConfig(rank=2, alpha=4.0, targets=("k", "o", "gate"))
    adapters = _random_adapters(chat.lm.model, config)
    base = _flat(chat.lm.model)
    store = CheckpointStore(tmp_path / "run")
    store.save(3, adapters, optax.adam(1e-3).init(adapters), [{"step": 3}],
               {"base_version": chat.version, "lora": asdict(config)})
    store.close()

    loaded, step = load_trained_policy(ChatLM(tiny_chat_dir), tmp_path / "run")
    assert step == 3
    weights = _flat(loaded.lm.model)
    for key in base:
        layer, name = next(((i, n) for i in range(len(adapters["k"]["a"])) for n in config.targets
                            if key == f"['layers'][{i}]{PATHS[n]}"), (None, None))
        if name is None:  # neither adapted projections nor anything else changes
            np.testing.assert_array_equal(weights[key], base[key])
            continue
        expected = _merged_by_hand(base[key], np.asarray(adapters[name]["a"][layer]),
                                   np.asarray(adapters[name]["b"][layer]), config.scale)
        np.testing.assert_allclose(weights[key], expected, rtol=1e-5, atol=1e-6)
        assert not np.allclose(weights[key], base[key]), key
    # The sampler generates with the merged weights.
    np.testing.assert_array_equal(np.asarray(loaded.sampler.state["layers"][1]["attn"]["k_proj"]["w"][...]),
                                  weights["['layers'][1]" + PATHS["k"]])

    other = CheckpointStore(tmp_path / "other-base")
    other.save(1, adapters, optax.adam(1e-3).init(adapters), [], {"base_version": "another-base", "lora": asdict(config)})
    other.close()
    with pytest.raises(ValueError, match="another-base"):
        load_trained_policy(ChatLM(tiny_chat_dir), tmp_path / "other-base")


def _lora_run(chat, directory, steps: int):
    config = GRPOConfig(steps=steps, users_per_step=2, rollouts=2, max_new_tokens=6, learning_rate=1e-2,
                        lora_rank=4, lora_alpha=8.0, lora_targets=("q", "v", "up"))
    judge = ScriptedJudge(["7", "2", "9", "4"])
    return train_profiler(chat, _data(), METHODS["rlaif"], config, directory, RewardModels(judge=judge),
                          log=lambda _: None)


def test_lora_training_changes_only_the_adapted_projections_and_resumes(tiny_chat_dir, tmp_path):
    chat = ChatLM(tiny_chat_dir)
    before = _flat(chat.lm.model)
    first = _lora_run(chat, tmp_path / "resumed", 1)
    assert first.step == 1 and not first.log[0].get("skipped_update")
    after = _flat(chat.lm.model)
    changed = {key for key in before if not np.array_equal(before[key], after[key])}
    assert changed == {f"['layers'][{i}]{PATHS[name]}" for i in range(len(chat.lm.model.layers)) for name in ("q", "v", "up")}
    store = CheckpointStore(tmp_path / "resumed")
    meta = store.meta(1)
    assert meta["base_version"] == chat.version and meta["lora"]["rank"] == 4
    store.close()

    resumed = _lora_run(ChatLM(tiny_chat_dir), tmp_path / "resumed", 2)
    assert resumed.resumed_from == 1 and resumed.trained_now == 1 and [r["step"] for r in resumed.log] == [1, 2]
    straight_chat = ChatLM(tiny_chat_dir)
    straight = _lora_run(straight_chat, tmp_path / "straight", 2)
    assert straight.digest == resumed.digest  # the resumed run continues exactly where the first one stopped

    with pytest.raises(ValueError, match="another run"):  # a full fine-tune cannot continue LoRA adapters
        train_profiler(ChatLM(tiny_chat_dir), _data(), METHODS["rlaif"], GRPOConfig(steps=3, users_per_step=2, rollouts=2),
                       tmp_path / "resumed", RewardModels(judge=ScriptedJudge(["7", "2", "9", "4"])), log=lambda _: None)



@pytest.mark.fast
def test_the_training_resource_passes_lora_on_and_only_a_lora_run_has_a_new_run_key():
    from profilekit.training import run_key
    from resources.training import TrainingResource

    config = TrainingResource(lora_rank=8, lora_alpha=16.0, lora_targets=["q", "v"]).config("group")
    assert config.lora == LoraConfig(rank=8, alpha=16.0, targets=("q", "v"))
    assert TrainingResource().config("group").lora is None  # full fine-tune by default
    with pytest.raises(ValueError, match="targets"):
        TrainingResource(lora_rank=8, lora_targets=["q", "lm_head"]).config("group")

    method = METHODS["blue"]
    full = run_key(method, GRPOConfig(), "base", "data")
    # The LoRA settings of a full fine-tune do not enter its key (runs trained before LoRA keep theirs) ...
    assert run_key(method, GRPOConfig(lora_alpha=1.0, lora_targets=("q",)), "base", "data") == full
    # ... a LoRA run's do.
    lora = run_key(method, GRPOConfig(lora_rank=8), "base", "data")
    assert len({full, lora, run_key(method, GRPOConfig(lora_rank=8, lora_alpha=1.0), "base", "data")}) == 3


def test_lora_steps_on_a_two_device_mesh_equal_the_unsharded_steps():
    path = write_tiny_lm(TEST_DATA / "tiny-llama", "llama")
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "tests.processes.sharded_step", str(path), "lora"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["mesh_devices"] == 2 and out["single_devices"] == 1
    assert out["mesh"] == pytest.approx(out["single"], rel=1e-5, abs=1e-7)
    assert out["mesh"][1] != pytest.approx(out["mesh"][0], rel=1e-4)  # the first update changed the policy
    assert np.allclose(out["mesh_emb"], out["single_emb"], atol=1e-6)  # the merged q projection of layer 1
