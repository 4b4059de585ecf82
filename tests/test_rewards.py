"""Reward functions and advantages on hand-computed cases (METHOD §3-5)."""

import math

import numpy as np
import pytest

from profilekit.prompts import parse_score
from profilekit.rewards import (
    batch_advantages,
    blue_embedding_reward,
    choice_reward,
    constant_groups,
    group_advantages,
    item_to_user_logprob,
    judge_score_reward,
    ndcg_reward,
    user_to_item_logprob,
)

pytestmark = pytest.mark.fast  # `make test-fast`: no Dagster run, subprocess, browser or real model

TAU = 0.07


def _unit(*v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# Two users (B=2), one rollout each (G=1), 2-d embeddings.
E1, E2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
USERS = np.stack([[E1], [_unit(1, 1)]])  # [B=2, G=1, d]
TARGETS = np.stack([E1, E2])  # [B, d]
NEGATIVES = np.stack([[E2, -E1], [E1, -E2]])  # [B, N=2, d]


def test_user_to_item_is_the_log_softmax_of_the_target_over_target_and_negatives():
    got = user_to_item_logprob(USERS, TARGETS, NEGATIVES, TAU)
    # user 0 = e1: sims target 1, negatives 0 and -1
    want0 = 1 / TAU - math.log(math.exp(1 / TAU) + math.exp(0) + math.exp(-1 / TAU))
    s = 1 / math.sqrt(2)  # user 1 = (e1+e2)/sqrt2: target e2 -> s, negatives e1 -> s, -e2 -> -s
    want1 = s / TAU - math.log(2 * math.exp(s / TAU) + math.exp(-s / TAU))
    assert got.shape == (2, 1)
    assert got[:, 0] == pytest.approx([want0, want1], rel=1e-9)


def test_item_to_user_ranks_the_own_user_among_the_batch_users_with_the_same_rollout_index():
    got = item_to_user_logprob(USERS, TARGETS, TAU)
    s = 1 / math.sqrt(2)
    # target of user 0 (e1) vs users e1 and (e1+e2)/sqrt2
    want0 = 1 / TAU - math.log(math.exp(1 / TAU) + math.exp(s / TAU))
    # target of user 1 (e2) vs users e1 (sim 0) and (e1+e2)/sqrt2 (sim s)
    want1 = s / TAU - math.log(math.exp(0) + math.exp(s / TAU))
    assert got[:, 0] == pytest.approx([want0, want1], rel=1e-9)


def test_item_to_user_never_mixes_rollout_indices():
    rng = np.random.default_rng(0)
    users = rng.normal(size=(3, 2, 4))
    users /= np.linalg.norm(users, axis=-1, keepdims=True)
    targets = rng.normal(size=(3, 4))
    full = item_to_user_logprob(users, targets, TAU)
    for g in range(2):
        assert full[:, g] == pytest.approx(item_to_user_logprob(users[:, g : g + 1], targets, TAU)[:, 0])


def test_blue_reward_sums_views_and_halves_directions_and_ablations_switch_terms():
    views = {"10H+P": USERS, "P": USERS[::-1].copy()}
    total, terms = blue_embedding_reward(views, TARGETS, NEGATIVES, temperature=TAU)
    u2i = {v: user_to_item_logprob(x, TARGETS, NEGATIVES, TAU) for v, x in views.items()}
    i2u = {v: item_to_user_logprob(x, TARGETS, TAU) for v, x in views.items()}
    assert total == pytest.approx(sum(0.5 * (u2i[v] + i2u[v]) for v in views))
    assert set(terms) == {"10H+P/u2i", "10H+P/i2u", "P/u2i", "P/i2u"}
    assert np.all(total <= 0)  # log-probabilities

    only_p, _ = blue_embedding_reward(views, TARGETS, NEGATIVES, views=("P",), temperature=TAU)
    assert only_p == pytest.approx(0.5 * (u2i["P"] + i2u["P"]))
    only_u2i, terms = blue_embedding_reward(views, TARGETS, NEGATIVES, directions=("u2i",), temperature=TAU)
    assert only_u2i == pytest.approx(0.5 * (u2i["10H+P"] + u2i["P"])) and set(terms) == {"10H+P/u2i", "P/u2i"}


def test_methods_reject_unknown_terms_advantages_views_and_empty_embedding_reward():
    from profilekit.methods import Method, Term, _blue

    with pytest.raises(ValueError, match="unknown reward term 'ppo'"):
        Term("ppo")
    with pytest.raises(ValueError, match="advantage"):
        Method("x", (Term("ndcg"),), advantage="ppo")
    with pytest.raises(ValueError, match="views must be within"):
        _blue("x", views=("H",))
    with pytest.raises(ValueError, match="at least one view"):
        _blue("x", views=())


def test_langptune_ndcg_of_the_target_ranked_by_profile_similarity():
    candidates = np.stack([np.stack([E1, E2, -E1]), np.stack([E1, E2, -E1])])  # target is column 0
    profiles = np.stack([[E1, E2], [-E1, _unit(1, 1)]])  # [B=2, G=2, d]
    got = ndcg_reward(profiles, candidates, k=2)
    # ranks: (E1) 1 -> 1.0; (E2) target sim 0 ties with -E1's 0? E2: sims [0, 1, 0] -> rank 3 (ties pessimistic) -> 0
    # (-E1): sims [-1, 0, 1] -> rank 3 -> 0; ((1,1)/sqrt2): sims [s, s, -s] -> rank 2 -> 1/log2(3)
    assert got == pytest.approx(np.array([[1.0, 0.0], [0.0, 1 / math.log2(3)]]))


def test_choice_and_judge_score_rewards():
    assert choice_reward([0, 2, None, 1], [0, 1, 3, 1]).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert judge_score_reward([1, 10, None, 4]).tolist() == pytest.approx([0.0, 1.0, 0.0, 1 / 3])
    assert [parse_score(a) for a in ["7", "Score: 10/10", "I give it 3.", "ten", "0"]] == [7, 10, 3, None, None]


def test_group_advantages_match_tunix_and_batch_advantages_ignore_groups():
    from tunix.rl.algo_core import compute_advantages

    rewards = np.array([[1.0, 0.0, 0.5, 0.5], [2.0, 2.0, 2.0, 2.0], [-1.0, -3.0, -2.0, 0.0]])
    ours = group_advantages(rewards)
    assert ours.reshape(-1) == pytest.approx(compute_advantages(rewards.reshape(-1), 4), abs=1e-9)
    assert ours[1] == pytest.approx(0.0)  # a constant group carries no signal
    assert constant_groups(rewards).tolist() == [False, True, False]
    flat = batch_advantages(rewards)
    assert flat.mean() == pytest.approx(0.0, abs=1e-9) and flat.std() == pytest.approx(1.0, rel=1e-5)
    assert flat[1, 0] > 0  # REINFORCE++: a group all above the batch mean gets positive advantages
