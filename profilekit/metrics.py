"""Ranking metrics with one relevant item, and paired significance tests between methods."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import f1_score

from profilekit.contexts import DUET_RATING_CONTEXT


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


REFERENCE_METHOD = "blue"
# Contexts without a profile are compared with BLUE's history+profile context (the paper's 10H+BLUE vs 10-H).
# DUET's rating-only `10H+P+Pi` context has no counterpart in Base or BLUE: it is paired with their 10H+P, the
# context it extends (by the item profile, and a target-conditioned user profile).
REFERENCE_CONTEXT = {"P": "P", "10H+P": "10H+P", "All-H": "10H+P", "10-H": "10H+P", DUET_RATING_CONTEXT: "10H+P"}


def compare_with_reference(scores: pd.DataFrame, value: str, reference: str = REFERENCE_METHOD) -> pd.DataFrame:
    """Per (domain, method, context): paired tests of the rows' per-example `value` against the reference method
    on the same examples. Columns vs_context, n_paired, mean_diff_vs_ref (row - reference), t/wilcoxon p-values;
    NaN where the reference method is absent or the row is the reference itself."""
    key = ["domain", "user_id", "cut"]
    ref = scores[scores["method"] == reference]
    rows = []
    for (domain, method, context), group in scores.groupby(["domain", "method", "context"], sort=False):
        vs = REFERENCE_CONTEXT.get(context)
        out = {"domain": domain, "method": method, "context": context, "vs_context": vs or "", "n_paired": 0,
               "mean_diff_vs_ref": float("nan"), "t_pvalue_vs_ref": float("nan"), "wilcoxon_pvalue_vs_ref": float("nan")}
        other = ref[(ref["domain"] == domain) & (ref["context"] == vs)] if vs else ref.iloc[0:0]
        if method != reference and len(other):
            paired = group.merge(other[[*key, value]], on=key, suffixes=("", "_ref"))
            test = paired_significance(paired[value].to_numpy(), paired[f"{value}_ref"].to_numpy())
            out.update(n_paired=len(paired), mean_diff_vs_ref=test["mean_diff"], t_pvalue_vs_ref=test["t_pvalue"],
                       wilcoxon_pvalue_vs_ref=test["wilcoxon_pvalue"])
        rows.append(out)
    return pd.DataFrame(rows)


BASE_METHOD = "Base"


def with_significance(metrics: pd.DataFrame, scores: pd.DataFrame, value: str) -> pd.DataFrame:
    """A metric table (one row per domain, method, context) with each row's paired tests on the same examples
    against BLUE (`n_paired`, `*_vs_ref`, `compare_with_reference`) and against Base (`*_vs_base`)."""
    key = ["domain", "method", "context"]
    vs_base = compare_with_reference(scores, value, BASE_METHOD).drop(columns="vs_context")
    vs_base = vs_base.rename(columns={"n_paired": "n_paired_vs_base",
                                      **{c: c.replace("_vs_ref", "_vs_base") for c in vs_base if c.endswith("_vs_ref")}})
    return metrics.merge(compare_with_reference(scores, value), on=key, how="left").merge(vs_base, on=key, how="left")


def round_to_scale(values: np.ndarray, low: float, high: float, step: float = 1.0) -> np.ndarray:
    """Clip into [low, high] and round to the nearest scale step, ties going up (DUET_BUMP A5 #8)."""
    clipped = np.clip(np.asarray(values, dtype=np.float64), low, high)
    return np.floor((clipped - low) / step + 0.5) * step + low


def rating_metrics(predicted: np.ndarray, target: np.ndarray, low: float, high: float, step: float = 1.0) -> dict[str, float]:
    """DUET's rating metrics on clipped predictions: MAE, RMSE, accuracy of the rounded rating, and macro-F1 of
    the rounded rating over the classes present in the targets (the released code's definition)."""
    predicted = np.clip(np.asarray(predicted, dtype=np.float64), low, high)
    target = np.asarray(target, dtype=np.float64)
    error = predicted - target
    # Class labels as integer scale steps, so float rounding cannot split one class in two.
    true_cls = np.round((target - low) / step).astype(np.int64)
    pred_cls = np.round((round_to_scale(predicted, low, high, step) - low) / step).astype(np.int64)
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "accuracy": float(np.mean(pred_cls == true_cls)),
        "macro_f1": float(f1_score(true_cls, pred_cls, labels=np.unique(true_cls), average="macro", zero_division=0)),
    }
