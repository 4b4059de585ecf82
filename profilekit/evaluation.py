"""Recommendation evaluation with a frozen embedder: user context text -> embedding -> rank of the target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from profilekit.embedder import Embedder, EmbeddingCache
from profilekit.metrics import (
    BASE_METHOD,
    compare_with_reference,
    ndcg_at_k,
    recall_at_k,
    target_ranks,
    with_significance,
)
from profilekit.rewards import BLUE_TEMPERATURE, user_to_item_logprob

EXAMPLE_KEY = ["domain", "user_id", "cut"]


def score_contexts(
    contexts: pd.DataFrame,
    candidates: pd.DataFrame,
    item_vectors: dict[str, np.ndarray],
    embedder: Embedder,
    cache: EmbeddingCache,
    k: int = 10,
    temperature: float = BLUE_TEMPERATURE,
) -> pd.DataFrame:
    """Per-example rank, NDCG@k and Recall@k of the target among its candidates for every context row, and
    `target_logp`: the log-softmax of the target among them at BLUE's InfoNCE temperature. That is the form of the
    user-to-item term of BLUE's embedding reward, here against the evaluation's candidates (training uses the 128
    train negatives, so the scales differ), which lets a test set show whether training moved that term."""
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
    out["target_logp"] = user_to_item_logprob(user_vecs[:, None], cand_matrix[:, 0], cand_matrix[:, 1:], temperature)[:, 0]
    return out.reset_index(drop=True)


def summarize(example_scores: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Mean metric per (domain, method, context)."""
    return (
        example_scores.groupby(["domain", "method", "context"], sort=False)
        .agg(n_examples=("rank", "size"), **{f"ndcg{k}": (f"ndcg{k}", "mean"), f"recall{k}": (f"recall{k}", "mean")},
             target_logp=("target_logp", "mean"))
        .reset_index()
    )


def rank_metrics(example_scores: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """`summarize` with N@k paired-tested against BLUE and Base (`with_significance`), and `target_logp` paired-tested
    against Base (the step-0 policy, for a trained method on the same embedder). Rows scored before `target_logp`
    was recorded (NULL in an older warehouse table) are left out of its mean and test."""
    key = ["domain", "method", "context"]
    logp = compare_with_reference(example_scores.dropna(subset=["target_logp"]), "target_logp", BASE_METHOD)[
        [*key, "mean_diff_vs_ref", "t_pvalue_vs_ref"]].rename(
        columns={"mean_diff_vs_ref": "target_logp_diff_vs_base", "t_pvalue_vs_ref": "target_logp_t_pvalue_vs_base"})
    metrics = with_significance(summarize(example_scores, k), example_scores, f"ndcg{k}")
    return metrics.merge(logp, on=key, how="left")


def score_with_embedders(
    contexts: pd.DataFrame,
    candidates: pd.DataFrame,
    items: pd.DataFrame,
    embedders: dict[str, tuple[str, Embedder]],
    cache_root: Path,
    k: int = 10,
) -> tuple[pd.DataFrame, int]:
    """`score_contexts` once per setting with that setting's embedder (`{setting: (train domain, embedder)}`, e.g.
    SCL's cross-domain and in-domain embedders); item vectors come from the embedding cache of each embedder's
    version. Returns the scores (columns setting, train_domain, embedder_version added) and how many item texts
    were encoded now."""
    frames, encoded_now = [], 0
    for setting, (train_domain, model) in embedders.items():
        cache = EmbeddingCache(cache_root, model.version)
        vectors, now = cache.encode(items["text"].tolist(), model)
        encoded_now += now
        scores = score_contexts(contexts, candidates, dict(zip(items["item_id"], vectors)), model, cache, k)
        frames.append(scores.assign(setting=setting, train_domain=train_domain, embedder_version=model.version))
    return pd.concat(frames, ignore_index=True), encoded_now


def metrics_by_setting(scores: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """`rank_metrics` per (setting, train domain): each row paired-tested against the reference methods of the
    same setting on the same examples."""
    tables = [
        rank_metrics(rows, k).assign(setting=setting, train_domain=train_domain)
        for (setting, train_domain), rows in scores.groupby(["setting", "train_domain"], sort=True)
    ]
    return pd.concat(tables, ignore_index=True)
