"""Training that measurably learns, through the real loop (rollouts -> rewards -> advantages -> update -> sampler
reload) on the tiny chat model, with a reward we can verify: the share of a profile's tokens that start a word.
Both the reward and its complement must rise, so an update with the wrong sign, a sampler that keeps the old
weights, or an update that changes nothing all fail. LoRA learns the same way, with a reward its adapters can reach.
The validation curve is scored along the way."""

import functools
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from profilekit.llm.sampler import Generation
from profilekit.methods import Method, Term, reward_term
from profilekit.profiler import ChatLM
from profilekit.protocol import validation_split
from profilekit.training import (
    GRPOConfig,
    RewardModels,
    TrainingExamples,
    case_study,
    step_log_blocks,
    train_profiler,
    training_reward_trend,
    validate,
    validation_gains,
    validation_summary,
)
from tests.training_setup import setup


def _word_starts(inputs) -> np.ndarray:
    tokenizer = inputs.policy.tokenizer
    shares = []
    for profile in inputs.profiles:
        tokens = tokenizer.convert_ids_to_tokens(tokenizer.encode(profile, add_special_tokens=False))
        shares.append(np.mean([t.startswith("Ġ") for t in tokens]) if tokens else 0.0)
    return inputs.grid(shares)


@reward_term("test_word_starts", needs=("policy",))
def _more_word_starts(inputs):
    return _word_starts(inputs), {}


@reward_term("test_word_continuations", needs=("policy",))
def _fewer_word_starts(inputs):
    return 1.0 - _word_starts(inputs), {}


@functools.cache
def _direction_scores(weights_dir: str) -> np.ndarray:
    """Per token: its tied embedding along a fixed random direction, standardised over the vocabulary."""
    from safetensors.numpy import load_file

    embeddings = load_file(Path(weights_dir) / "model.safetensors")["model.embed_tokens.weight"]
    direction = np.random.default_rng(0).normal(size=embeddings.shape[1])
    scores = embeddings @ (direction / np.linalg.norm(direction))
    return (scores - scores.mean()) / scores.std()


@reward_term("test_embedding_direction", needs=("policy",))
def _along_a_direction(inputs, weights_dir: str, sign: float):
    """The profile's tokens' mean score along the direction (times `sign`): a reward the layers can reach, since
    raising it means turning the final hidden state toward (or away from) one direction of the embedding space."""
    scores, tokenizer = _direction_scores(weights_dir), inputs.policy.tokenizer
    means = [float(scores[ids].mean()) if (ids := tokenizer.encode(p, add_special_tokens=False)) else 0.0
             for p in inputs.profiles]
    return sign * inputs.grid(means), {}


def _subset(data: TrainingExamples, rows: list[int]) -> TrainingExamples:
    return TrainingExamples(**{name: [getattr(data, name)[i] for i in rows] for name in (
        "messages", "recent", "target_ids", "negative_ids", "options", "answers")}, user_ids=[f"u{i}" for i in rows])


# A learning rate no real model would take: a random-init model has no shared structure, so a reward only rises
# once the few sampled tokens it favours gain most of the probability mass.
CONFIG = GRPOConfig(steps=10, users_per_step=2, rollouts=6, max_new_tokens=10, learning_rate=0.1, validate_every=5)


@pytest.mark.parametrize("term", ["test_word_starts", "test_word_continuations"])
def test_the_verifiable_reward_rises_in_training_and_on_held_out_users(tiny_chat_dir, tmp_path, term):
    chat, data, models = setup(tiny_chat_dir)
    train, held_out = _subset(data, [0, 1, 2]), _subset(data, [3, 4])
    result = train_profiler(ChatLM(tiny_chat_dir), train, Method(term, (Term(term),)), CONFIG, tmp_path, models,
                            log=lambda _: None, validation=held_out)

    # At lr 0.1 the batch reward (12 rollouts at temperature 1) swings from step to step, so the halves of the run
    # are compared. Measured (on a 2-core machine): the real loop gains 0.07 (word starts) and 0.36 (continuations)
    # in training and 0.28 / 0.54 on the held-out users; a flipped sign, a zero learning rate and a sampler holding
    # a copy of the base weights gain at most 0.013 in training and nothing on the held-out users.
    rewards = np.array([r["reward_mean"] for r in result.log])
    half = len(rewards) // 2
    assert rewards[half:].mean() > rewards[:half].mean() + 0.05, rewards
    curve = result.validation
    assert [r["step"] for r in curve] == [0, 5, 10]
    assert curve[-1]["reward_mean"] > curve[0]["reward_mean"] + 0.15, curve  # shares of tokens, in [0, 1]
    assert len(curve[-1]["rewards"]) == 2 and np.mean(curve[-1]["rewards"]) == pytest.approx(curve[-1]["reward_mean"])
    assert {"P/ndcg10", "P/recall10", "10H+P/ndcg10", "10H+P/recall10", f"reward/{term}"} <= set(curve[0])
    study = case_study(curve)
    assert list(study["step"].unique()) == [0, 5, 10] and set(study["user_id"]) == {"u3", "u4"}
    assert study.groupby("user_id")["profile"].nunique().min() > 1  # the held-out users' profiles changed


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["toward", "away"])
def test_a_lora_run_learns_a_reward_its_adapters_can_reach(wide_tiny_chat_dir, tmp_path, sign):
    """LoRA (rank 8 on every projection) through the same loop: the word-start share above lives in the tied
    embeddings, which LoRA leaves alone, so its reward is one the layers control."""
    chat, data, models = setup(wide_tiny_chat_dir)
    train, held_out = _subset(data, [0, 1, 2]), _subset(data, [3, 4])
    method = Method("test_embedding_direction", (Term("test_embedding_direction",
                                                      options={"weights_dir": str(wide_tiny_chat_dir), "sign": sign}),))
    config = replace(CONFIG, lora_rank=8, lora_alpha=16.0, learning_rate=0.01)
    result = train_profiler(ChatLM(wide_tiny_chat_dir), train, method, config, tmp_path, models, log=lambda _: None,
                            validation=held_out)

    # Measured (on a 2-core machine): the real loop gains 0.19 (toward) and 0.28 (away) in training and 0.71 / 0.51
    # on the held-out users (standardised scores); a flipped advantage sign loses 0.19-0.28 in training, and a zero
    # learning rate or a sampler left with the base weights (the adapters never merged) gains at most 0.027 in
    # training and nothing held out.
    rewards = np.array([r["reward_mean"] for r in result.log])
    half = len(rewards) // 2
    assert rewards[half:].mean() > rewards[:half].mean() + 0.1, rewards
    assert result.validation[-1]["reward_mean"] > result.validation[0]["reward_mean"] + 0.25, result.validation
    assert result.log[-1]["kl"] > 0


def test_a_resumed_run_keeps_its_validation_curve(tiny_chat_dir, tmp_path):
    chat, data, models = setup(tiny_chat_dir)
    train, held_out = _subset(data, [0, 1, 2]), _subset(data, [3, 4])
    method = Method("test_word_starts", (Term("test_word_starts"),))
    first = train_profiler(chat, train, method, replace(CONFIG, steps=2), tmp_path, models, log=lambda _: None,
                           validation=held_out)
    assert [r["step"] for r in first.validation] == [0, 2]
    resumed = train_profiler(ChatLM(tiny_chat_dir), train, method, replace(CONFIG, steps=3), tmp_path, models,
                             log=lambda _: None, validation=held_out)
    assert resumed.resumed_from == 2
    assert [r["step"] for r in resumed.validation] == [0, 2, 3]
    assert resumed.validation[:2] == first.validation
    assert [r["step"] for r in resumed.log] == [1, 2, 3]

    class Killed(Exception):
        pass

    def kill_after_step_one(record):
        if record["step"] == 1:
            raise Killed

    grid = replace(CONFIG, steps=4, validate_every=2)
    with pytest.raises(Killed):  # killed after step 1's checkpoint, between two validations
        train_profiler(ChatLM(tiny_chat_dir), train, method, grid, tmp_path / "killed", models, log=lambda _: None,
                       validation=held_out, on_step=kill_after_step_one)
    again = train_profiler(ChatLM(tiny_chat_dir), train, method, grid, tmp_path / "killed", models,
                           log=lambda _: None, validation=held_out)
    assert again.resumed_from == 1 and [r["step"] for r in again.validation] == [0, 2, 4]  # no extra point at 1

    from jobs.run_report import report

    def files(root):
        return {(p, p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")}

    before = files(tmp_path / "killed")
    text = report(tmp_path / "killed", block=2)  # read back from the checkpoints, as beside a running job
    assert files(tmp_path / "killed") == before  # nothing written, moved or removed
    assert text.splitlines()[0].endswith("last saved step 4")
    assert "| 1-2 " in text and "| 3-4 " in text and "validation (gain" in text
    assert "update_dot_path" in text.splitlines()[2]  # the full fine-tune's step log names its CPU dot path
    with pytest.raises(FileNotFoundError):
        report(tmp_path / "never-trained", block=2)
    assert not (tmp_path / "never-trained").exists()


@pytest.mark.fast
def test_validation_users_are_train_users_held_out_by_a_stable_hash():
    import pandas as pd

    rows = [{"domain": "d", "user_id": f"u{u}", "split": "test" if u < 5 else "train", "cut": c}
            for u in range(40) for c in range(2)]
    histories = pd.DataFrame(rows)
    train, held_out = validation_split(histories, 8)
    assert held_out["user_id"].nunique() == len(held_out) == 8 and set(held_out["cut"]) == {0}
    assert set(held_out["user_id"]).isdisjoint(train["user_id"])
    assert set(held_out["user_id"]).isdisjoint({f"u{u}" for u in range(5)})  # never a test user
    assert set(train["split"]) == {"train"} and train["user_id"].nunique() == 35 - 8
    again = validation_split(histories.sample(frac=1.0, random_state=3), 8)[1]
    assert set(again["user_id"]) == set(held_out["user_id"])  # row order does not matter
    assert validation_split(histories, 100)[1]["user_id"].nunique() == 35 // 2  # a small domain keeps half to train on


def _record(step: int, reward: float, spread: float, users=("a", "b", "c")) -> dict:
    return {"step": step, "reward_mean": reward, "reward_std": spread, "rewards": [reward - 0.1, reward, reward + 0.1],
            "P/ndcg10": reward / 10,
            "10H+P/ndcg10": reward / 5, "case_study": [{"user_id": u, "profile": f"{u} at {step}"} for u in users]}


@pytest.mark.fast
def test_validation_summary_and_case_study_pick_first_middle_and_last():
    curve = [_record(0, 0.2, 0.05), _record(4, 0.3, 0.04), _record(8, 0.35, 0.04), _record(12, 0.5, 0.03)]
    summary = validation_summary(curve)
    assert summary["validation_reward_gain"] == pytest.approx(0.3)
    assert summary["validation_reward_spread"] == 0.05  # the step-0 spread, the noise a gain must clear
    assert summary["validation_reward_gain_se"] == pytest.approx(0.0, abs=1e-12)  # every user gained exactly 0.3
    curve[-1]["rewards"] = [0.3, 0.5, 0.7]  # per-user gains 0.2, 0.3, 0.4: sd 0.1 over 3 users
    assert validation_summary(curve)["validation_reward_gain_se"] == pytest.approx(0.1 / np.sqrt(3))
    assert "validation_reward_gain_se" not in validation_summary([{**r, "rewards": []} for r in curve])
    assert summary["validation_ndcg10_10HP_first"] == pytest.approx(0.04)
    assert summary["validation_ndcg10_P_last"] == pytest.approx(0.05)
    study = case_study(curve)
    assert study["step"].tolist() == [0, 8, 12] * 3 and study["user_id"].tolist()[:3] == ["a"] * 3
    assert study["profile"].iloc[1] == "a at 8"
    assert validation_summary([]) == {} and case_study([]).empty


@pytest.mark.fast
def test_validation_gains_pair_each_point_with_the_first_on_the_same_users():
    from scipy import stats

    curve = [_record(0, 0.2, 0.05), _record(4, 0.5, 0.04)]
    curve[1]["rewards"] = [0.3, 0.5, 0.7]  # per-user gains 0.2, 0.3, 0.4
    table = validation_gains(curve)
    assert table["step"].tolist() == [0, 4] and np.isnan(table["gain"].iloc[0])
    assert table["gain"].iloc[1] == pytest.approx(0.3)
    assert table["gain_se"].iloc[1] == pytest.approx(0.1 / np.sqrt(3))
    # t = 0.3 / (0.1 / sqrt 3) on 2 degrees of freedom, two-sided
    assert table["gain_p"].iloc[1] == pytest.approx(2 * stats.t.sf(0.3 / (0.1 / np.sqrt(3)), 2))
    assert table["10H+P_ndcg10"].tolist() == pytest.approx([0.04, 0.1])
    unpaired = validation_gains([{**r, "rewards": []} for r in curve])
    assert unpaired["gain"].isna().all() and validation_gains([]).empty
    resampled = validation_gains([{**curve[0], "samples": 1}, {**curve[1], "samples": 4}])  # other draws: no pair
    assert resampled["gain"].isna().all()


@pytest.mark.fast
def test_the_step_log_in_blocks_averages_terms_and_takes_the_last_kl_and_median_seconds():
    log = [{"step": s, "reward_mean": float(s), "reward/a": 2.0 * s, "kl": s / 100, "completion_tokens_mean": 10.0,
            "seconds": float(s * s), "seconds_rollout": 1.0, "seconds_update": float(s)} for s in range(1, 6)]
    blocks = step_log_blocks(log, 2)
    assert blocks["steps"].tolist() == ["1-2", "3-4", "5-5"]
    assert blocks["reward_mean"].tolist() == [1.5, 3.5, 5.0] and blocks["reward/a"].tolist() == [3.0, 7.0, 10.0]
    assert blocks["kl_last"].tolist() == [0.02, 0.04, 0.05]
    assert blocks["median_seconds"].tolist() == [2.5, 12.5, 25.0]
    assert "update_dot_path" not in blocks
    log[3]["update_dot_path"], log[4]["update_dot_path"] = "eigen", "ynnpack"  # resumed on another machine at 5
    assert step_log_blocks(log, 2)["update_dot_path"].tolist() == ["", "eigen", "ynnpack"]
    skipped = step_log_blocks([{k: v for k, v in r.items() if k != "kl"} for r in log], 2)
    assert "kl_last" not in skipped and len(skipped) == 3
    assert step_log_blocks([], 2).empty


@pytest.mark.fast
def test_the_training_reward_trend_is_the_least_squares_slope_over_the_first_pass_through_the_users():
    # 4 users a step over 20 training users: steps 1-5 roll out fresh users; steps 6-7 repeat them and do not count.
    rewards = [1.0, 1.2, 1.1, 1.5, 1.4, 9.0, 9.0]
    log = [{"step": s, "reward_mean": r} for s, r in enumerate(rewards, 1)]
    trend = training_reward_trend(log, users_per_step=4, train_users=20)
    assert trend["training_reward_slope_steps"] == 5
    # By hand over steps 1-5: slope = sum((s - 3)(r - 1.24)) / sum((s - 3)^2) = 1.1 / 10 = 0.11 a step, and
    # se = sqrt(sum(residual^2) / 3 / 10).
    assert trend["training_reward_slope_per_100_steps"] == pytest.approx(11.0)
    fitted = 1.24 + 0.11 * (np.arange(1, 6) - 3)
    residuals = np.array(rewards[:5]) - fitted
    assert trend["training_reward_slope_se"] == pytest.approx(100 * np.sqrt(residuals @ residuals / 3 / 10))
    flat = [{"step": s, "reward_mean": 2.0} for s in range(1, 6)]
    assert training_reward_trend(flat, 4, 20)["training_reward_slope_per_100_steps"] == pytest.approx(0.0, abs=1e-9)
    assert training_reward_trend(log[:2], 4, 20) == {}  # too few steps for a slope and its error


@pytest.mark.fast
def test_an_evaluation_run_names_the_training_settings_of_the_run_it_should_find():
    from jobs.default_run import training_run_config

    assert training_run_config(None, []) == {}
    assert training_run_config(200, ["users_per_step=8", "remat=false"]) == {
        "resources": {"training": {"config": {"users_per_step": 8, "remat": False, "steps": 200}}}}
    with pytest.raises(SystemExit, match="training resource field"):
        training_run_config(200, ["users=8"])


@pytest.mark.fast
def test_recipe_grid_is_typed_by_the_training_resource_and_ranked_by_gain_per_cpu_hour():
    from jobs.recipe_sweep import parse_grid, rank_recipes

    grid = parse_grid(["learning_rate=1e-5,1e-4", "rollouts=4,8"])
    assert len(grid) == 4 and grid[3] == {"learning_rate": 1e-4, "rollouts": 8}
    assert isinstance(grid[0]["rollouts"], int) and parse_grid([]) == [{}]
    with pytest.raises(SystemExit, match="training resource field"):
        parse_grid(["learning_rat=1e-5"])
    assert parse_grid(["lora_targets=q+v,q"]) == [{"lora_targets": ["q", "v"]}, {"lora_targets": ["q"]}]
    table = rank_recipes([
        {"learning_rate": 1e-5, "validation_reward_gain": 0.02, "validation_reward_spread": 0.1, "seconds": 360.0},
        {"learning_rate": 1e-4, "validation_reward_gain": 0.03, "validation_reward_spread": 0.1, "seconds": 1800.0},
    ])
    assert table["learning_rate"].tolist() == [1e-5, 1e-4]  # 0.2 per hour beats 0.06 per hour
    assert table["gain_per_cpu_hour"].iloc[0] == pytest.approx(0.2)
    assert "gain_over_se" not in table  # runs validated before per-user rewards were kept
    with_se = rank_recipes([{"validation_reward_gain": 0.02, "validation_reward_spread": 0.1,
                             "validation_reward_gain_se": 0.04, "seconds": 360.0}])
    assert with_se["gain_over_se"].iloc[0] == pytest.approx(0.5)


class _EchoPolicy:
    """A profiler that answers with its prompt, character for character: whatever the prompt holds reaches the
    profile, so what validation ranks from shows."""

    class tokenizer:
        @staticmethod
        def decode(ids, skip_special_tokens=True):
            return "".join(map(chr, ids))

    class sampler:
        @staticmethod
        def generate(prompts, config, samples=1):
            rows = [p for p in prompts for _ in range(samples)]
            return Generation(rows, [len(p) for p in prompts], 0.0, stops=[None] * len(rows))

    @staticmethod
    def encode_chat(messages):
        return [ord(c) for c in messages[-1]["content"]]

    @staticmethod
    def sampling_for(prompt, config):
        return config


class _TitleEmbedder:
    """Users whose text names the target point at it; every other text points away from it."""

    @staticmethod
    def encode(texts):
        return np.array([[1.0, 0.0] if "Target Film" in t else [0.0, 1.0] for t in texts])


@reward_term("test_zero", needs=())
def _zero(inputs):
    return inputs.grid(np.zeros(len(inputs.rows))), {}


@pytest.mark.fast
@pytest.mark.parametrize("prompt, leaks", [("duet", False), ("profile", True)])
def test_validation_ranks_an_item_aware_prompt_from_blank_mode_profiles(prompt, leaks):
    n = 3
    data = TrainingExamples(
        messages=[[{"role": "user", "content": f"History: [Old film {u} | 4]. Item: Target Film {u}."}] for u in range(n)],
        blank_messages=[[{"role": "user", "content": f"History: [Old film {u} | 4]. Item: none."}] for u in range(n)],
        recent=[f"[Old film {u} | 4]" for u in range(n)], target_ids=[f"t{u}" for u in range(n)],
        negative_ids=[[f"n{k}" for k in range(12)]] * n, options=[["a", "b", "c", "d"]] * n, answers=[0] * n,
        user_ids=[f"u{u}" for u in range(n)])
    vectors = {**{f"t{u}": np.array([1.0, 0.0]) for u in range(n)}, **{f"n{k}": np.array([0.1, 1.0]) for k in range(12)}}
    method = Method("leak-check", (Term("test_zero"),), prompt=prompt)
    record = validate(_EchoPolicy(), data, method, RewardModels(_TitleEmbedder(), vectors), GRPOConfig(validation_samples=2), 0)
    # Through a target-mode profile the target ranks first (NDCG 1); from a blank-mode one it ranks last.
    assert record["P/ndcg10"] == record["10H+P/ndcg10"] == (1.0 if leaks else 0.0)
    assert ("Target Film" in record["case_study"][0]["profile"]) == leaks
    assert record["rewards"] == [0.0] * n and record["samples"] == 2
