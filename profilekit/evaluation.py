"""Recommendation evaluation with a frozen embedder: user context text -> embedding -> rank of the target."""

from __future__ import annotations

import numpy as np
import pandas as pd

from profilekit.embedder import Embedder, EmbeddingCache
from profilekit.metrics import ndcg_at_k, recall_at_k, target_ranks

EXAMPLE_KEY = ["domain", "user_id", "cut"]


def score_contexts(
    contexts: pd.DataFrame,
    candidates: pd.DataFrame,
    item_vectors: dict[str, np.ndarray],
    embedder: Embedder,
    cache: EmbeddingCache,
    k: int = 10,
) -> pd.DataFrame:
    """Per-example rank, NDCG@k and Recall@k of the target among its candidates for every context row."""
    cands = candidates.sort_values([*EXAMPLE_KEY, "position"])
    grouped = cands.groupby(EXAMPLE_KEY, sort=False)["item_id"].agg(list)
    keys = list(zip(contexts["domain"], contexts["user_id"], contexts["cut"]))
    missing = [key for key in keys if key not in grouped.index]
    if missing:
        raise ValueError(f"{len(missing)} examples have no candidate set, e.g. {missing[0]}")
    cand_lists = [grouped.loc[key] for key in keys]
    cand_matrix = np.stack([np.stack([item_vectors[i] for i in lst]) for lst in cand_lists])  # [n, C, d]
    user_vecs, _ = cache.encode(contexts["text"].tolist(), embedder)
    scores = np.einsum("ncd,nd->nc", cand_matrix, user_vecs)
    ranks = target_ranks(scores)
    out = contexts[[*EXAMPLE_KEY, "method", "context"]].copy()
    out["n_candidates"] = cand_matrix.shape[1]
    out["rank"] = ranks.astype(np.int64)
    out[f"ndcg{k}"] = ndcg_at_k(ranks, k)
    out[f"recall{k}"] = recall_at_k(ranks, k)
    return out.reset_index(drop=True)


def summarize(example_scores: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Mean metric per (domain, method, context)."""
    return (
        example_scores.groupby(["domain", "method", "context"], sort=False)
        .agg(n_examples=("rank", "size"), **{f"ndcg{k}": (f"ndcg{k}", "mean"), f"recall{k}": (f"recall{k}", "mean")})
        .reset_index()
    )
