"""BUMP (DUET_BUMP Part B): bidirectional in-batch ranking reward. Forward: a profile ranks its user's held-out
interaction among K other users' held-out interactions; backward: the held-out interaction ranks its user's
profile among K other users' profiles. Each direction's NDCG is averaged over M_perm shuffled presentations;
R = w_fwd·R̄_fwd + w_bwd·R̄_bwd (sum, or their weighted mean) - R_len.

The ranking itself is a `Ranker` (the listwise LLM judge; the pointwise LLM judge or the frozen embedder as labelled
deviations); the rest is pure numpy, testable on hand-computed cases. Only P = 1 held-out event is wired (the
example's target, joined with the last P - 1 history events' lines under `holdout_events`); `multi_positive_ndcg`
is the general form for P separately ranked positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from profilekit.metrics import target_ranks
from profilekit.prompts import bump_backward_messages, bump_forward_messages, bump_pointwise_messages, parse_ranking

DIRECTIONS = ("forward", "backward")
COMBINE = ("sum", "mean")
BACKWARD_ROLLOUT = ("same", "random")  # which rollout of another user is a backward negative


def multi_positive_ndcg(ranks: np.ndarray) -> np.ndarray:
    """(1/Z_P) Σ_p 1/log2(r_p + 1) over the last axis (P positives' 1-based ranks); 1 iff they fill the top P."""
    ranks = np.asarray(ranks, dtype=np.float64)
    ideal = np.sum(1.0 / np.log2(np.arange(1, ranks.shape[-1] + 1) + 1.0))
    return np.sum(1.0 / np.log2(ranks + 1.0), axis=-1) / ideal


def single_positive_ndcg(ranks: np.ndarray) -> np.ndarray:
    """1/log2(r + 1): BUMP's NDCG with one relevant candidate (P = 1, and every backward query)."""
    return 1.0 / np.log2(np.asarray(ranks, dtype=np.float64) + 1.0)


def chance_ndcg(k: int) -> float:
    """Expected NDCG of one positive among k + 1 candidates in uniformly random order: a judge giving no signal."""
    return float(np.mean(single_positive_ndcg(np.arange(1, k + 2))))


def positive_rank(order: Sequence[int], n: int, positive: int) -> int:
    """1-based rank of `positive` after the pessimistic repair: candidates the judge left out go after the ones it
    ranked, the positive after every left-out negative, so an unparseable answer ranks the positive last."""
    order = list(order)
    return order.index(positive) + 1 if positive in order else n


def holdout_split(history_ids: Sequence[str], history_ratings: Sequence[float], target_id: str, target_rating: float,
                  events: int = 1) -> tuple[list[str], list[float], list[str], list[float]]:
    """`holdout_events=P` (DUET_BUMP B5 #1): the history's last P - 1 events join the target in the held-out set.
    Returns the visible history (ids, ratings) the profiler sees and the held-out events (ids, ratings), oldest
    first, target last. P = 1 holds out the target alone and leaves the history as it is."""
    if events < 1:
        raise ValueError(f"holdout_events must be >= 1, got {events}")
    moved = events - 1
    if len(history_ids) <= moved:
        raise ValueError(f"holdout_events={events} leaves no visible history of {len(history_ids)} events")
    cut = len(history_ids) - moved
    return (list(history_ids[:cut]), list(history_ratings[:cut]), [*history_ids[cut:], target_id],
            [*history_ratings[cut:], target_rating])


def length_penalty(lengths: np.ndarray, threshold: int, weight: float = 1.0) -> np.ndarray:
    """R_len = λ·max(0, L - T)/T (choice: the note gives only "zero below T, increasingly strong above")."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return weight * np.maximum(0.0, lengths - threshold) / threshold


def _held_items(held: str | Sequence[str]) -> set[str]:
    return {held} if isinstance(held, str) else set(held)


def negative_pools(target_ids: Sequence[str | Sequence[str]], k: int, rng: np.random.Generator) -> list[list[int]]:
    """Per batch position: up to k other positions, sampled without replacement, shared by all its rollouts.
    False negatives are excluded: a user holding out any of the same items never serves as a negative (an entry
    of `target_ids` is one held-out item id, or the ids of all its held-out events when P > 1)."""
    held = [_held_items(t) for t in target_ids]
    pools = []
    for u in range(len(held)):
        others = [v for v in range(len(held)) if v != u and held[u].isdisjoint(held[v])]
        pools.append(sorted(rng.choice(others, size=min(k, len(others)), replace=False).tolist()) if others else [])
    return pools


def centroid(vectors: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of the rows (item vectors of a visible history), zeros for no rows."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if not len(vectors):
        return np.zeros(vectors.shape[-1])
    mean = vectors.mean(axis=0)
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 0 else mean


def hard_negative_pools(centroids: np.ndarray, target_ids: Sequence[str | Sequence[str]], k: int) -> list[list[int]]:
    """BUMP+ backward negatives (B5 #9): per batch position, the k other positions whose visible-history centroid
    is nearest to its own by cosine (ties to the earlier position), false negatives excluded as in
    `negative_pools`; sorted by position, as the sampled pools are."""
    unit = np.array([centroid(c[None]) for c in np.asarray(centroids, dtype=np.float64)])
    sims = unit @ unit.T
    held = [_held_items(t) for t in target_ids]
    pools = []
    for u in range(len(held)):
        others = [v for v in range(len(held)) if v != u and held[u].isdisjoint(held[v])]
        pools.append(sorted(sorted(others, key=lambda v: (-sims[u, v], v))[:k]))
    return pools


def hard_positive(candidates: np.ndarray, visible_centroid: np.ndarray) -> int:
    """BUMP+ forward positive (B5 #9): the index of the held-out candidate (oldest first) least similar by cosine
    to the visible-history centroid; ties go to the latest, so identical candidates keep the target."""
    unit = np.array([centroid(c[None]) for c in np.asarray(candidates, dtype=np.float64)])
    sims = unit @ centroid(np.asarray(visible_centroid)[None])
    return len(sims) - 1 - int(np.argmin(sims[::-1]))


class Ranker(Protocol):
    def __call__(self, direction: str, queries: list[str], pools: list[list[str]], positives: list[int]
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Per query: the 1-based rank the judge gives the candidate at index `positives[i]` of `pools[i]`, and
        whether its answer could not be read at all."""
        ...


@dataclass
class ListwiseJudge:
    """The frozen LLM judge reading the whole candidate list and answering with a permutation (greedy)."""

    chat: object
    sampling: object

    def __call__(self, direction, queries, pools, positives):
        build = bump_forward_messages if direction == "forward" else bump_backward_messages
        answers = self.chat.generate([build(q, c) for q, c in zip(queries, pools)], self.sampling).texts
        orders = [parse_ranking(a, len(c)) for a, c in zip(answers, pools)]
        ranks = [positive_rank(o, len(c), p) for o, c, p in zip(orders, pools, positives)]
        return np.array(ranks), np.array([not o for o in orders])


def _ranks_by_scores(scores: Sequence[np.ndarray], positives: Sequence[int]) -> np.ndarray:
    """Rank of each list's positive by descending score, ties counted against it (`target_ranks`)."""
    return np.array([int(target_ranks(np.concatenate([s[p:p + 1], np.delete(s, p)])[None])[0])
                     for s, p in zip(scores, positives)])


@dataclass
class PointwiseJudge:
    """Labelled deviation (`judge="pointwise"`): the judge's log-odds of "Yes" for each (query, candidate) pair,
    one prefill each; ties rank the positive below the tied negatives."""

    chat: object

    def __call__(self, direction, queries, pools, positives):
        logodds = self.chat.yes_no_logodds([bump_pointwise_messages(direction, q, c) for q, cands in zip(queries, pools)
                                            for c in cands])
        bounds = np.cumsum([0, *map(len, pools)])
        scores = [logodds[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return _ranks_by_scores(scores, positives), np.zeros(len(queries), bool)


@dataclass
class EmbedderJudge:
    """Labelled deviation (`bump_embedder`): cosine of the frozen embedder's vectors, ties against the positive."""

    embedder: object

    def __call__(self, direction, queries, pools, positives):
        vectors = self.embedder.encode(list(queries) + [t for c in pools for t in c])
        scores, at = [], len(queries)
        for i, cands in enumerate(pools):
            scores.append(vectors[at: at + len(cands)] @ vectors[i])
            at += len(cands)
        return _ranks_by_scores(scores, positives), np.zeros(len(queries), bool)


@dataclass(frozen=True)
class BumpConfig:
    """Every (choice) of DUET_BUMP B5 as a value; defaults are the spec's."""

    k: int = 8  # in-batch negatives per user, K = min(k, B - 1) before false-negative exclusion
    m_perm: int = 2  # shuffled presentations per query
    w_fwd: float = 1.0
    w_bwd: float = 1.0
    combine: str = "sum"
    backward_rollout: str = "same"
    length_threshold: int = 64  # T in tokens; paper scale 256, CPU (96 new tokens) 64
    length_weight: float = 1.0  # λ_len

    def __post_init__(self):
        if self.combine not in COMBINE or self.backward_rollout not in BACKWARD_ROLLOUT:
            raise ValueError(f"combine must be in {COMBINE} and backward_rollout in {BACKWARD_ROLLOUT}")
        if self.w_fwd < 0 or self.w_bwd < 0 or self.w_fwd + self.w_bwd == 0 or self.m_perm < 1 or self.k < 1:
            raise ValueError("BUMP needs a positive direction weight, m_perm >= 1 and k >= 1")


def _direction(ranker: Ranker, direction: str, queries: list[tuple[tuple, str, list[str]]]) -> tuple[np.ndarray, np.ndarray]:
    """Runs one direction over (seed key, query, candidates with the positive at index 0): each candidate list is
    shown in the order of its own seeded shuffle; returns NDCG and unparsed flags per query."""
    shown, positives = [], []
    for key, _, cands in queries:
        order = np.random.default_rng([*key, DIRECTIONS.index(direction)]).permutation(len(cands))
        shown.append([cands[j] for j in order])
        positives.append(int(np.flatnonzero(order == 0)[0]))
    ranks, unparsed = ranker(direction, [q for _, q, _ in queries], shown, positives)
    return single_positive_ndcg(ranks), np.asarray(unparsed, dtype=bool)


def bump_rewards(
    profiles: np.ndarray, heldout: Sequence[str], target_ids: Sequence[str | Sequence[str]], example_ids: Sequence[int],
    lengths: np.ndarray, ranker: Ranker, config: BumpConfig, seed: int = 0, step: int = 0,
    backward_pools: list[list[int]] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """R per rollout [B, G] and its parts for the log. `profiles` [B, G] texts and `lengths` [B, G] tokens;
    `heldout`, `target_ids` and `example_ids` per batch position. Pools are drawn once per step (shared by a
    user's G rollouts, so its group competes on one candidate pool); each shuffle is seeded from (seed, step,
    example, rollout, m, direction). `backward_pools` replaces the drawn pool in the backward direction (BUMP+'s
    hard negatives)."""
    profiles = np.asarray(profiles, dtype=object)
    b, g = profiles.shape
    pools = negative_pools(target_ids, config.k, np.random.default_rng([seed, step, *example_ids]))
    backward = pools if backward_pools is None else backward_pools
    other_rollout = {
        (u, r, v): (r if config.backward_rollout == "same" else int(np.random.default_rng([seed, step, example_ids[u], r, v]).integers(g)))
        for u in range(b) for r in range(g) for v in backward[u]
    }
    parts: dict[str, np.ndarray] = {}
    total, weights, unparsed_all = np.zeros((b, g)), 0.0, []
    for direction, weight in (("forward", config.w_fwd), ("backward", config.w_bwd)):
        if weight == 0:
            continue
        queries = []
        for u in range(b):
            for r in range(g):
                if direction == "forward":
                    query, cands = profiles[u, r], [heldout[u], *[heldout[v] for v in pools[u]]]
                else:
                    query, cands = heldout[u], [profiles[u, r], *[profiles[v, other_rollout[(u, r, v)]] for v in backward[u]]]
                queries.extend(((seed, step, example_ids[u], r, m), query, cands) for m in range(config.m_perm))
        ndcg, unparsed = _direction(ranker, direction, queries)
        value = ndcg.reshape(b, g, config.m_perm).mean(axis=2)
        parts["fwd" if direction == "forward" else "bwd"] = value
        unparsed_all.append(unparsed)
        total, weights = total + weight * value, weights + weight
    if config.combine == "mean":
        total = total / weights
    penalty = length_penalty(lengths, config.length_threshold, config.length_weight)
    k_grid = np.repeat(np.array([len(p) for p in pools], dtype=np.float64)[:, None], g, axis=1)
    parts.update(
        len_penalty=penalty,
        penalised_frac=(penalty > 0).astype(np.float64),
        judge_unparsed=np.full((b, g), float(np.concatenate(unparsed_all).mean())),
        K=k_grid,
        chance=np.vectorize(lambda k: chance_ndcg(int(k)))(k_grid),
    )
    return total - penalty, parts

