"""The GRPO step computes tunix's objective (loss and gradients), the trainer runs every method on a tiny chat
model, a killed run resumes from its last checkpoint, a finished run is not retrained, and one sharded step on
a 2-device CPU mesh equals the unsharded step."""

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from profilekit.llm.grpo_step import cast_floats, completion_logps, grpo_loss
from profilekit.llm.model import load_lm
from profilekit.methods import METHODS
from profilekit.training import train_profiler
from tests.conftest import ROOT, TEST_DATA
from tests.processes.killed_training import KILLED_AFTER
from tests.tiny_llm import write_tiny_lm
from tests.training_setup import config, setup

PAD = 0
B, G, W, T = 2, 3, 12, 7


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    prompt, valid = np.zeros((B, W), np.int32), np.zeros((B, W), bool)
    for b, length in enumerate([9, 12]):  # one left-padded prompt
        prompt[b, W - length:], valid[b, W - length:] = rng.integers(3, 250, length), True
    completion = rng.integers(3, 250, (B * G, T)).astype(np.int32)
    for i, length in enumerate([7, 4, 5, 1, 6, 3]):
        completion[i, length:] = PAD
    return prompt, valid, completion, completion != PAD, rng.normal(size=B * G).astype(np.float32), rng.normal(
        -5, 0.5, size=(B * G, T)
    ).astype(np.float32)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3"])
def test_loss_and_gradients_equal_tunix_grpo_loss(family):
    from tunix.rl import common
    from tunix.rl.algo_core import grpo_loss_fn
    from tunix.rl.grpo.grpo_learner import GRPOConfig as TunixGRPOConfig

    model = load_lm(write_tiny_lm(TEST_DATA / f"tiny-{family}", family)).model
    prompt, valid, completion, mask, adv, ref = _batch()
    temperature = 0.8
    config = TunixGRPOConfig(num_generations=G, beta=0.01, epsilon=0.2, kl_loss_mode="low_var_kl")
    config.temperature = temperature
    example = common.TrainExample(
        prompt_ids=jnp.asarray(np.repeat(prompt, G, 0)), prompt_mask=jnp.asarray(np.repeat(valid, G, 0)),
        completion_ids=jnp.asarray(completion), completion_mask=jnp.asarray(mask), advantages=jnp.asarray(adv),
        ref_per_token_logps=jnp.asarray(ref), old_per_token_logps=None,
    )

    def theirs(m):
        return grpo_loss_fn(m, example, config, PAD, 1)[0]

    def ours(m):
        logps = completion_logps(m, jnp.asarray(prompt), jnp.asarray(valid), jnp.asarray(completion), samples=G,
                                 chunk=3, temperature=temperature)
        return grpo_loss(logps, jnp.asarray(ref), jnp.asarray(adv), jnp.asarray(mask), epsilon=0.2, beta=0.01)[0]

    loss_t, grad_t = nnx.value_and_grad(theirs)(model)
    loss_o, grad_o = nnx.value_and_grad(ours)(model)
    assert float(loss_o) == pytest.approx(float(loss_t), rel=1e-5, abs=1e-7)
    worst = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), grad_t, grad_o)))
    scale = max(jax.tree.leaves(jax.tree.map(lambda a: float(jnp.max(jnp.abs(a))), grad_t)))
    assert worst <= 1e-5 * scale, (worst, scale)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_bf16_step_matches_the_f32_step(family):
    """The trainer's bf16 compute (weights cast from f32 masters, f32 accumulation, bf16 cotangents in the backward
    dots) against f32 on the same parameters. Measured: loss within 0.2-0.9 %, gradient relative L2 error 0.9-1.3 %,
    cosine > 0.9999; with and without per-layer remat the f32 gradients agree to 2e-7."""
    model = load_lm(write_tiny_lm(TEST_DATA / f"tiny-{family}", family)).model
    prompt, valid, completion, mask, adv, ref = map(jnp.asarray, _batch())
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @partial(jax.jit, static_argnums=(1, 2))
    def loss_and_grad(p, dtype, remat):
        def loss(p):
            m = nnx.merge(graphdef, cast_floats(p, dtype), rest)
            logps = completion_logps(m, prompt, valid, completion, samples=G, chunk=3, temperature=0.8, remat=remat)
            return grpo_loss(logps, ref, adv, mask, epsilon=0.2, beta=0.01)[0]

        return jax.value_and_grad(loss)(p)

    def flat(tree):
        return jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])

    loss32, grad32 = loss_and_grad(params, jnp.float32, True)
    loss16, grad16 = loss_and_grad(params, jnp.bfloat16, True)
    assert {x.dtype for x in jax.tree.leaves(grad16)} == {jnp.dtype(jnp.float32)}  # gradients of the f32 masters
    assert abs(float(loss16 - loss32)) <= 0.03 * abs(float(loss32)) + 1e-5
    g32, g16 = flat(grad32), flat(grad16)
    assert float(jnp.linalg.norm(g16 - g32) / jnp.linalg.norm(g32)) < 0.03
    assert float(g16 @ g32 / (jnp.linalg.norm(g16) * jnp.linalg.norm(g32))) > 0.999
    if family == "llama":  # remat wraps every family's layer alike: one family proves it changes no gradient
        _, grad_saved = loss_and_grad(params, jnp.float32, False)
        assert float(jnp.abs(flat(grad_saved) - g32).max()) <= 1e-5 * float(jnp.abs(g32).max())


@pytest.mark.parametrize("family", ["qwen2", "gemma3"])
def test_the_trainer_layout_round_trips_through_checkpoints(family):
    """The trainer holds llama/qwen layers pre-stacked (gemma3: nnx's state); checkpoints keep nnx's state. The
    round trip must keep every parameter and adam moment (a resumed step equals the uninterrupted one), and the
    checkpoint's content hash must be the hash of the model's own parameters."""
    import optax

    from profilekit.checkpoints import params_digest
    from profilekit.llm.grpo_step import PolicyTrainer, StepGeometry

    path = write_tiny_lm(TEST_DATA / f"tiny-{family}", family)
    prompt, valid, completion, mask, adv, _ = _batch()
    geometry = StepGeometry(samples=G, epsilon=0.2, beta=0.01, chunk=3)
    model = load_lm(path).model
    own = cast_floats(nnx.state(model, nnx.Param), jnp.float32)
    straight = PolicyTrainer(model, optax.adamw(1e-2), geometry)
    assert params_digest(straight.checkpoint_state()[0]) == params_digest(own)
    straight.step(prompt, valid, completion, mask, adv)
    saved = jax.tree.map(np.array, straight.checkpoint_state())
    assert jax.tree.structure(saved[0]) == jax.tree.structure(own)
    resumed = PolicyTrainer(load_lm(path).model, optax.adamw(1e-2), geometry)
    resumed.restore_state(*jax.tree.map(jnp.asarray, saved))
    second = [t.step(prompt, valid, completion, mask, -adv)["loss"] for t in (straight, resumed)]
    assert second[0] == pytest.approx(second[1], rel=1e-6, abs=1e-8)
    for a, b in zip(jax.tree.leaves(straight.checkpoint_state()), jax.tree.leaves(resumed.checkpoint_state())):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    sampler = load_lm(path).model
    resumed.write_into(sampler)
    for a, b in zip(jax.tree.leaves(nnx.state(sampler, nnx.Param)), jax.tree.leaves(resumed.checkpoint_state()[0])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b).astype(a.dtype))


def test_the_update_computes_the_same_step_through_either_cpu_dot_path(monkeypatch):
    """The update compiled with YNNPACK's fusions and with Eigen's dots (XLA:CPU's two paths, of which the trainer
    takes the faster on its CPU) must give the same steps."""
    import optax

    from profilekit.llm import grpo_step

    path = write_tiny_lm(TEST_DATA / "tiny-qwen2", "qwen2")
    prompt, valid, completion, mask, adv, _ = _batch()
    geometry = grpo_step.StepGeometry(samples=G, epsilon=0.2, beta=0.01, chunk=3, compute_dtype="bfloat16")

    def compiled_and_step(dot_path):
        monkeypatch.setattr(grpo_step, "faster_cpu_dot_path", lambda dtype: dot_path)
        trainer = grpo_step.PolicyTrainer(load_lm(path).model, optax.adamw(1e-2), geometry)
        assert trainer.dot_path == dot_path
        batch = tuple(jnp.asarray(x) for x in (prompt, valid, completion, mask, adv))
        hlo = trainer._step.lower(trainer.params, trainer.rest, trainer.opt_state, trainer.ref_params,
                                  batch).compile().as_text()  # with the options the trainer's jit was given
        first = trainer.step(prompt, valid, completion, mask, adv)
        return hlo, [first, trainer.step(prompt, valid, completion, mask, -adv)]  # the second after an update

    with_eigen, eigen = compiled_and_step("eigen")
    with_ynn, ynn = compiled_and_step("ynnpack")
    assert "__ynn_fusion" in with_ynn and "__ynn_fusion" not in with_eigen
    assert eigen[1]["kl"] > 0
    for step in (0, 1):
        for key in ("loss", "kl", "grad_norm"):
            assert eigen[step][key] == pytest.approx(ynn[step][key], rel=1e-4, abs=1e-7)


def test_the_update_takes_the_cpu_dot_path_whose_probe_is_faster(monkeypatch):
    from profilekit.llm import grpo_step

    # The real probe on this machine: both paths compile and run, and the choice is one of them.
    probed = grpo_step._probe_seconds("bfloat16")
    assert set(probed) == {"ynnpack", "eigen"} and all(len(t) == grpo_step._PROBE_ROUNDS for t in probed.values())
    assert all(t > 0 for times in probed.values() for t in times)
    assert grpo_step.faster_cpu_dot_path("bfloat16") in grpo_step.CPU_DOT_PATHS
    cases = [  # (YNNPACK's seconds, Eigen's seconds, the path taken)
        ([0.3, 0.3, 0.01], [0.25, 0.25, 0.25], "eigen"),  # Eigen faster at the median, though not at the mean
        ([0.25, 0.25, 0.25], [0.3, 0.3, 0.01], "ynnpack"),
        ([0.25, 0.25, 0.25], [0.245, 0.245, 0.245], "ynnpack"),  # 2 % faster: a tie keeps XLA's default
    ]
    for ynnpack, eigen, taken in cases:
        monkeypatch.setattr(grpo_step, "_probe_seconds", lambda dtype: {"ynnpack": ynnpack, "eigen": eigen})
        grpo_step.faster_cpu_dot_path.cache_clear()
        assert grpo_step.faster_cpu_dot_path("float32") == taken
    grpo_step.faster_cpu_dot_path.cache_clear()


def test_loss_terms_on_a_hand_made_case():
    logps = jnp.log(jnp.array([[0.5, 0.25, 1.0], [0.5, 0.5, 0.5]]))
    ref = jnp.log(jnp.array([[0.25, 0.25, 1.0], [0.5, 0.5, 0.5]]))
    mask = jnp.array([[1, 1, 0], [1, 1, 1]], bool)
    loss, aux = grpo_loss(logps, ref, jnp.array([2.0, -1.0]), mask, epsilon=0.2, beta=0.5)
    # ratio = 1: policy term = -mean_rollouts(A) = -(2 - 1) / 2; k3 KL of row 0 token 0: r = 0.5 -> 0.5 - log 0.5 - 1
    kl00 = 0.5 - np.log(0.5) - 1.0
    assert float(aux["pg_loss"]) == pytest.approx(-0.5)
    assert float(aux["kl_loss"]) == pytest.approx((kl00 / 2 + 0.0) / 2)
    assert float(loss) == pytest.approx(-0.5 + 0.5 * kl00 / 4)


EXPECTED_TERMS = {
    "blue": {"reward/blue_embedding/10H+P/u2i", "reward/blue_embedding/10H+P/i2u", "reward/blue_embedding/P/u2i",
             "reward/blue_embedding/P/i2u", "reward/blue_embedding", "reward/self_multiple_choice"},
    "langptune": {"reward/ndcg"},
    "rlpf": {"reward/judge_multiple_choice"},
    "rlaif": {"reward/judge_score", "reward/judge_score/unparsed"},
    "blue-no-text": {"reward/blue_embedding"},
    "blue-reinforcepp": {"reward/blue_embedding", "reward/self_multiple_choice"},
}


def test_every_method_trains_and_logs_its_terms(tiny_chat_dir, tmp_path):
    chat, data, models = setup(tiny_chat_dir)  # one policy, trained further by each method in turn
    for method, expected in EXPECTED_TERMS.items():
        before = np.asarray(chat.lm.model.embedder.input_embedding.value).copy()
        result = train_profiler(chat, data, METHODS[method], config(1), tmp_path / method, models,
                                       log=lambda _: None)
        assert result.step == 1 and result.trained_now == 1 and [r["step"] for r in result.log] == [1], method
        record = result.log[-1]
        assert expected <= set(record), (method, sorted(record))
        assert {"completion_tokens_mean", "dropped_groups", "reward_mean", "seconds"} <= set(record)
        if method == "blue-no-text":
            assert "reward/self_multiple_choice" not in record
        updated = [r for r in result.log if not r.get("skipped_update")]
        for r in updated:
            assert {"kl", "clip_fraction", "pg_loss", "grad_norm"} <= set(r)
        changed = not np.array_equal(before, np.asarray(chat.lm.model.embedder.input_embedding.value))
        assert changed == bool(updated), method


def test_killed_run_resumes_from_its_last_checkpoint_and_a_finished_run_is_not_retrained(tiny_chat_dir, tmp_path):
    ckpt, marker = tmp_path / "ckpt", tmp_path / "last_step"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    child = subprocess.Popen([sys.executable, "-m", "tests.processes.killed_training", str(tiny_chat_dir), str(ckpt), str(marker)], cwd=ROOT,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not (marker.exists() and marker.read_text() == str(KILLED_AFTER)):
        assert child.poll() is None, child.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    chat, data, models = setup(tiny_chat_dir)
    logs = []
    resumed = train_profiler(chat, data, METHODS["blue"], config(2), ckpt, models, log=logs.append)
    assert resumed.resumed_from == KILLED_AFTER and resumed.trained_now == 2 - KILLED_AFTER and resumed.step == 2
    assert [r["step"] for r in resumed.log] == [1, 2]  # the killed run's log survives in the checkpoint
    assert any(f"resumed from checkpoint step {KILLED_AFTER}" in line for line in logs)

    chat, data, models = setup(tiny_chat_dir)
    again = train_profiler(chat, data, METHODS["blue"], config(2), ckpt, models, log=lambda _: None)
    assert again.trained_now == 0 and again.step == 2 and again.digest == resumed.digest


def test_one_sharded_grpo_step_on_a_two_device_mesh_equals_the_unsharded_step():
    path = write_tiny_lm(TEST_DATA / "tiny-llama", "llama")
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "tests.processes.sharded_step", str(path)], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["mesh_devices"] == 2 and out["single_devices"] == 1
    assert out["mesh"] == pytest.approx(out["single"], rel=1e-5, abs=1e-7)
    assert np.allclose(out["mesh_emb"], out["single_emb"], atol=1e-6)
    # The trainer's pre-stacked weights keep the layers' sharding (layer axis replicated), and so do checkpoints.
    placement = out["mesh_placement"]
    assert placement["layer_sharded"] and placement["stacked_like_layers"] and placement["checkpoint_like_layer"], placement


def test_distributed_compute_initialises_multi_host_jax_before_building_the_mesh():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "tests.processes.distributed_mesh"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"processes": 1, "mesh_devices": 2, "initialized": True}
