"""Reward functions of BLUE and its baselines (METHOD §3, §5), and GRPO / REINFORCE++ advantages (§4).

Pure numpy on already-computed embeddings and parsed answers, so each is testable on hand-computed cases; the
trainer (`profilekit.grpo`) produces the embeddings and the LLM answers. Shapes: B users, G rollouts each.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax

from profilekit.metrics import ndcg_at_k, target_ranks

VIEWS = ("10H+P", "P")
DIRECTIONS = ("u2i", "i2u")
BLUE_TEMPERATURE = 0.07  # τ of BLUE's InfoNCE (METHOD §3)


def user_to_item_logprob(users: np.ndarray, target: np.ndarray, negatives: np.ndarray, tau: float) -> np.ndarray:
    """ℓ_u2i: log-softmax of the target among target + negatives, per user and rollout.

    users [B, G, d], target [B, d], negatives [B, N, d] (all L2-normalised) -> [B, G]."""
    pos = np.einsum("bgd,bd->bg", users, target)
    neg = np.einsum("bgd,bnd->bgn", users, negatives)
    logits = np.concatenate([pos[..., None], neg], axis=-1) / tau
    return log_softmax(logits, axis=-1)[..., 0]


def item_to_user_logprob(users: np.ndarray, target: np.ndarray, tau: float) -> np.ndarray:
    """ℓ_i2u: for user b's target, log-softmax of user b among all users of the batch, each represented by its
    rollout with the same index g (METHOD §3's choice). users [B, G, d], target [B, d] -> [B, G]."""
    sims = np.einsum("bd,cgd->gbc", target, users) / tau  # [G, target of b, user c]
    logp = log_softmax(sims, axis=-1)
    return np.einsum("gbb->bg", logp)


def check_views_and_directions(views: tuple[str, ...], directions: tuple[str, ...]) -> None:
    """The embedding reward needs at least one known view and one known direction (Table 6 switches them)."""
    if not views or not directions:
        raise ValueError("the embedding reward needs at least one view and one direction")
    if not set(views) <= set(VIEWS) or not set(directions) <= set(DIRECTIONS):
        raise ValueError(f"views must be within {VIEWS} and directions within {DIRECTIONS}, got {views}, {directions}")


def blue_embedding_reward(
    view_vectors: dict[str, np.ndarray], target: np.ndarray, negatives: np.ndarray,
    views: tuple[str, ...] = VIEWS, directions: tuple[str, ...] = DIRECTIONS,
    temperature: float = BLUE_TEMPERATURE,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """R_emb = Σ_views Σ_directions ½ ℓ (both directions: ½(ℓ_u2i + ℓ_i2u)), and each term for logging.

    Each direction keeps its ½ when the other is switched off, as METHOD §3's formula with one term dropped, so a
    one-direction ablation halves the embedding reward's weight against R_text, as dropping a view does.
    """
    check_views_and_directions(views, directions)
    total = np.zeros(next(iter(view_vectors.values())).shape[:2])
    terms = {}
    for view in views:
        users = view_vectors[view]
        parts = []
        if "u2i" in directions:
            terms[f"{view}/u2i"] = user_to_item_logprob(users, target, negatives, temperature)
            parts.append(terms[f"{view}/u2i"])
        if "i2u" in directions:
            terms[f"{view}/i2u"] = item_to_user_logprob(users, target, temperature)
            parts.append(terms[f"{view}/i2u"])
        total = total + 0.5 * np.sum(parts, axis=0)
    return total, terms


def ndcg_reward(profile_vectors: np.ndarray, candidates: np.ndarray, k: int = 10) -> np.ndarray:
    """LangPTune: NDCG@k of the target (candidate 0) ranked by cosine to E(P). [B, G, d], [B, C, d] -> [B, G]."""
    scores = np.einsum("bgd,bcd->bgc", profile_vectors, candidates)
    b, g, c = scores.shape
    return ndcg_at_k(target_ranks(scores.reshape(b * g, c)), k).reshape(b, g)


def choice_reward(chosen: list[int | None], answers: list[int]) -> np.ndarray:
    """1 where the parsed choice is the right option, 0 otherwise (unparseable answers count as wrong)."""
    return np.array([float(c is not None and c == a) for c, a in zip(chosen, answers)])


def judge_score_reward(scores: list[int | None]) -> np.ndarray:
    """RLAIF: a 1-10 quality score mapped to [0, 1]; an unparseable score is 0."""
    return np.array([0.0 if s is None else (min(max(s, 1), 10) - 1) / 9.0 for s in scores])


def constant_groups(rewards: np.ndarray, atol: float = 1e-9) -> np.ndarray:
    """[B] True where every rollout of the user got the same reward."""
    return np.ptp(rewards, axis=1) <= atol


def group_advantages(rewards: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """GRPO: (R - mean_group) / (std_group + eps) with the unbiased std, as tunix computes it. [B, G] -> [B, G]."""
    mean = rewards.mean(axis=1, keepdims=True)
    std = rewards.std(axis=1, ddof=1, keepdims=True) if rewards.shape[1] > 1 else np.zeros_like(mean)
    return (rewards - mean) / (std + eps)


def batch_advantages(rewards: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """REINFORCE++: one baseline and scale for the whole batch, no per-user group baseline."""
    return (rewards - rewards.mean()) / (rewards.std() + eps)
