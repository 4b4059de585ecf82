"""Ranking metrics with one relevant item, and paired significance tests between methods."""

from __future__ import annotations

import numpy as np
from scipy import stats


def target_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of column 0 (the target) in each row; ties count against the target (pessimistic)."""
    scores = np.asarray(scores)
    return 1 + (scores[:, 1:] >= scores[:, :1]).sum(axis=1)


def ndcg_at_k(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def recall_at_k(ranks: np.ndarray, k: int = 10) -> np.ndarray:
    return (np.asarray(ranks) <= k).astype(np.float64)


def paired_significance(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired t-test and Wilcoxon signed-rank test of per-example scores a vs b (same examples, same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal shapes, got {a.shape} and {b.shape}")
    diff = a - b
    out = {"n": float(len(a)), "mean_diff": float(diff.mean()) if len(a) else float("nan")}
    if len(a) < 2 or np.allclose(diff, 0.0):
        out.update(t_pvalue=1.0, wilcoxon_pvalue=1.0)
        return out
    out["t_pvalue"] = float(stats.ttest_rel(a, b).pvalue)
    out["wilcoxon_pvalue"] = float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)
    return out
