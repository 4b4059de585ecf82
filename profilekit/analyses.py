"""The paper's comparison views beyond Table 2 (METHOD §8): the Table-6 ablation table, a t-SNE of user embeddings
per method (§5.3) and the quality / inference-cost frontier (§5.2)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from profilekit.methods import METHODS
from profilekit.metrics import REFERENCE_METHOD, paired_significance

EXAMPLE_KEY = ["domain", "user_id", "cut"]
ABLATION_CONTEXTS = ("P", "10H+P")
# (metric column of the ablation table, per-example column it averages, table of per-example scores)
ABLATION_METRICS = (("ndcg10", "ndcg10", "rec"), ("recall10", "recall10", "rec"), ("mc_accuracy", "mc_correct", "qa"))
HISTORY_CONTEXTS = ("All-H", "10-H")
UNKNOWN_GENRE = "unknown"
# Table 6 (every registered variant of BLUE's reward or advantage estimator against BLUE) and the same table for
# DUET's and BUMP's variants against DUET and BUMP: {reference: its variants}.
ABLATION_FAMILIES = {reference: tuple(m for m in METHODS if m.startswith(f"{reference}-"))
                     for reference in (REFERENCE_METHOD, "duet", "bump")}
ABLATION_VARIANTS = ABLATION_FAMILIES[REFERENCE_METHOD]

ABLATION_COLUMNS = [
    "domain", "reference", "method", "training_steps", "context", "n_examples", "n_qa", "n_paired", "n_qa_paired",
    *[c for metric, _, _ in ABLATION_METRICS
      for c in (metric, f"delta_{metric}", f"{metric}_t_pvalue", f"{metric}_wilcoxon_pvalue")],
]


def ablation_table(
    rec_scores: pd.DataFrame, qa_scores: pd.DataFrame, methods: Sequence[str], reference: str = REFERENCE_METHOD
) -> pd.DataFrame:
    """Table 6 of one domain: per method of `methods` (the reference first, then its variants) and profile context
    (P, 10H+P): mean N@10, R@10 and QA next-item accuracy, and for each its mean difference to the reference's
    same context on the users both have (`delta_*`, variant - reference) with a paired t-test and Wilcoxon test.
    A method without rows in a table gets NaN there; the reference's own deltas are NaN."""
    frames = {"rec": rec_scores, "qa": qa_scores}
    rows = []
    for method in dict.fromkeys([reference, *methods]):
        for context in ABLATION_CONTEXTS:
            selected = {name: _rows(frame, method, context) for name, frame in frames.items()}
            if all(frame.empty for frame in selected.values()):
                continue
            row: dict[str, object] = {"domain": _domain(selected), "reference": reference, "method": method, "context": context,
                                      "n_examples": len(selected["rec"]), "n_qa": len(selected["qa"]),
                                      "n_paired": 0, "n_qa_paired": 0}
            for metric, value, source in ABLATION_METRICS:
                rows_now = selected[source]
                row[metric] = float(rows_now[value].mean()) if len(rows_now) else float("nan")
                test = {"mean_diff": float("nan"), "t_pvalue": float("nan"), "wilcoxon_pvalue": float("nan")}
                ref = _rows(frames[source], reference, context)
                if method != reference and len(rows_now) and len(ref):
                    paired = rows_now.merge(ref[[*EXAMPLE_KEY, value]], on=EXAMPLE_KEY, suffixes=("", "_ref"))
                    row["n_qa_paired" if source == "qa" else "n_paired"] = len(paired)
                    if len(paired):
                        test = paired_significance(paired[value].to_numpy(), paired[f"{value}_ref"].to_numpy())
                row[f"delta_{metric}"] = test["mean_diff"]
                row[f"{metric}_t_pvalue"] = test["t_pvalue"]
                row[f"{metric}_wilcoxon_pvalue"] = test["wilcoxon_pvalue"]
            rows.append(row)
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def ablation_tables(rec_scores: pd.DataFrame, qa_scores: pd.DataFrame,
                    training_steps: Mapping[str, int | None] | None = None) -> pd.DataFrame:
    """`ablation_table` of every family of `ABLATION_FAMILIES` (BLUE's first), stacked: each variant against its
    own reference; families with no rows are left out. `training_steps` (method -> steps of the checkpoint its
    profiles come from) fills the column that shows whether a variant had its reference's budget."""
    tables = [ablation_table(rec_scores, qa_scores, variants, reference)
              for reference, variants in ABLATION_FAMILIES.items()]
    tables = [t for t in tables if len(t)]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=ABLATION_COLUMNS)
    steps = training_steps or {}
    table["training_steps"] = pd.array([steps.get(m) for m in table["method"]], dtype="Int64")
    return table


def budget_mismatches(table: pd.DataFrame) -> list[str]:
    """The trained variants of an ablation table whose step count differs from their reference's (or is unknown
    while the reference's is known): Table 6 compares equal budgets. Zero-shot rows are untrained by design."""
    steps = dict(zip(table["method"], table["training_steps"]))
    out = []
    for method, reference in dict(zip(table["method"], table["reference"])).items():
        if method == reference or reference not in steps or (method in METHODS and METHODS[method].zero_shot):
            continue
        mine, theirs = steps[method], steps[reference]
        if pd.isna(theirs) or (not pd.isna(mine) and mine == theirs):
            continue
        out.append(f"{method}: {'unknown' if pd.isna(mine) else int(mine)} steps, {reference}: {int(theirs)}")
    return out


def _rows(frame: pd.DataFrame, method: str, context: str) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[(frame["method"] == method) & (frame["context"] == context)]


def _domain(selected: dict[str, pd.DataFrame]) -> str:
    return next(str(frame["domain"].iloc[0]) for frame in selected.values() if len(frame))


def item_genres(items: pd.DataFrame) -> dict[str, list[str]]:
    """Each item's genre / category labels, read back from its embedder text `<title> | <labels>` (MovieLens
    genres, Amazon categories; Google Local: the last part, its categories). Items without labels get none."""
    out = {}
    for item_id, title, text in zip(items["item_id"], items["title"], items["text"]):
        rest = text[len(title) + 3:] if text.startswith(f"{title} | ") else ""
        labels = rest.rsplit(" | ", 1)[-1] if rest else ""
        out[item_id] = [g.strip() for g in labels.split(",") if g.strip()]
    return out


def dominant_genres(examples: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Per example (domain, user_id, cut): the label most frequent over its history items' genres / categories;
    ties go to the label met first in the history (oldest first, then the item's own label order);
    `unknown` when no history item carries a label."""
    genres = item_genres(items)
    rows = []
    for ex in examples.itertuples(index=False):
        counts = Counter(g for item in json.loads(ex.history_items) for g in genres.get(item, []))
        rows.append((ex.domain, ex.user_id, ex.cut, counts.most_common(1)[0][0] if counts else UNKNOWN_GENRE))
    return pd.DataFrame(rows, columns=[*EXAMPLE_KEY, "dominant_genre"])


def tsne_coordinates(vectors: np.ndarray, seed: int, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of L2-normalised vectors (scikit-learn's Barnes-Hut, cosine distances, PCA start) on one
    OpenMP thread, so the same vectors and seed give identical coordinates whatever the machine's core count."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(vectors)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), metric="cosine", init="pca",
                random_state=seed, n_jobs=1)
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(np.asarray(vectors, dtype=np.float64))


def tsne_table(contexts: pd.DataFrame, vectors: np.ndarray, genres: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One row per user context (domain, user_id, cut, method, context) with its t-SNE coordinates x, y (all
    contexts projected together, so methods share one map) and the user's dominant genre."""
    xy = tsne_coordinates(vectors, seed)
    out = contexts[[*EXAMPLE_KEY, "method", "context"]].reset_index(drop=True).assign(x=xy[:, 0], y=xy[:, 1])
    out = out.merge(genres, on=EXAMPLE_KEY, how="left")
    return out.assign(dominant_genre=out["dominant_genre"].fillna(UNKNOWN_GENRE))


def embedding_seconds(texts: list[str], encode, sample: int = 256) -> float:
    """Wall seconds per text of encoding `texts` in one batched call of `encode` (no cache), after a one-text
    warm-up so lazy initialisation is not counted. A rate needs no more than a fixed random `sample` of the texts
    (the same one on a rebuild): timing all 1,200 evaluated users' texts of every method and context again took
    minutes at each rebuild of the analyses."""
    if not texts:
        return 0.0
    if len(texts) > sample:
        texts = [texts[i] for i in np.sort(np.random.default_rng(0).choice(len(texts), sample, replace=False))]
    encode(texts[:1])
    started = time.perf_counter()
    encode(texts)
    return (time.perf_counter() - started) / len(texts)


def pareto_front(seconds: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """True where no other point is at least as fast and at least as good, and strictly better in one."""
    seconds, quality = np.asarray(seconds, dtype=float), np.asarray(quality, dtype=float)
    no_worse = (seconds[None, :] <= seconds[:, None]) & (quality[None, :] >= quality[:, None])
    better = (seconds[None, :] < seconds[:, None]) | (quality[None, :] > quality[:, None])
    return ~(no_worse & better).any(axis=1)


def efficiency_table(
    rec_metrics: pd.DataFrame, profile_seconds: pd.DataFrame, embed_seconds: pd.DataFrame
) -> pd.DataFrame:
    """Per method (its 10H+P context) and raw-history context (All-H, 10-H): N@10 next to inference seconds per
    user = profile generation (`profile_seconds`: per-user rows of method, seconds) + embedding
    (`embed_seconds`: method, context, seconds_per_user), and whether it lies on the quality/cost frontier."""
    wanted = (rec_metrics["context"] == "10H+P") | rec_metrics["context"].isin(HISTORY_CONTEXTS)
    table = rec_metrics.loc[wanted, ["domain", "method", "context", "n_examples", "ndcg10", "recall10"]]
    generation = profile_seconds.groupby("method")["seconds"].mean().rename("generation_seconds")
    table = table.merge(generation, left_on="method", right_index=True, how="left")
    table["generation_seconds"] = table["generation_seconds"].fillna(0.0)  # raw-history contexts generate nothing
    table = table.merge(embed_seconds.rename(columns={"seconds_per_user": "embedding_seconds"}),
                        on=["method", "context"], how="inner")
    table["seconds_per_user"] = table["generation_seconds"] + table["embedding_seconds"]
    table["on_frontier"] = pareto_front(table["seconds_per_user"].to_numpy(), table["ndcg10"].to_numpy())
    return table.sort_values("seconds_per_user", kind="stable").reset_index(drop=True)
