"""pandera schemas of every table that crosses an asset boundary."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

UTC = pd.DatetimeTZDtype(unit="ns", tz="UTC")
_domain = pa.Column(str, nullable=False)
_user = pa.Column(str, nullable=False)

interactions_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "user_id": _user,
        "item_id": pa.Column(str, nullable=False),
        "rating": pa.Column(float, pa.Check(lambda s: s.abs() < float("inf"), name="finite"), nullable=False),
        "timestamp": pa.Column(UTC, nullable=False),
        "seq": pa.Column("int64", pa.Check.ge(0), nullable=False),
    },
    unique=["domain", "seq"],
    coerce=True,
    strict=True,
    name="interactions",
)

items_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "item_id": pa.Column(str, nullable=False),
        "title": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
        "text": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
    },
    unique=["domain", "item_id"],
    coerce=True,
    strict=True,
    name="items",
)

filtered_histories_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "user_id": _user,
        "split": pa.Column(str, pa.Check.isin(["train", "test"])),
        "cut": pa.Column("int64", pa.Check.ge(0)),
        "target_item_id": pa.Column(str),
        "target_rating": pa.Column(float),
        "target_timestamp": pa.Column(UTC),
        "history_len": pa.Column("int64", pa.Check.ge(1)),
        "history_items": pa.Column(str),
        "history_ratings": pa.Column(str),
    },
    unique=["domain", "user_id", "cut"],
    coerce=True,
    strict=True,
    name="filtered_histories",
)

candidate_sets_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "user_id": _user,
        "cut": pa.Column("int64", pa.Check.ge(0)),
        "split": pa.Column(str, pa.Check.isin(["train", "test"])),
        "position": pa.Column("int64", pa.Check.ge(0)),
        "item_id": pa.Column(str),
        "is_target": pa.Column(bool),
    },
    unique=["domain", "user_id", "cut", "position"],
    coerce=True,
    strict=True,
    name="candidate_sets",
)

rec_example_scores_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "user_id": _user,
        "cut": pa.Column("int64"),
        "method": pa.Column(str),
        "context": pa.Column(str),
        "n_candidates": pa.Column("int64", pa.Check.ge(2)),
        "rank": pa.Column("int64", pa.Check.ge(1)),
        "ndcg10": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
        "recall10": pa.Column(float, pa.Check.isin([0.0, 1.0])),
        "target_logp": pa.Column(float, pa.Check.le(0.0)),
    },
    unique=["domain", "user_id", "cut", "method", "context"],
    coerce=True,
    strict=True,
    name="rec_example_scores",
)

rec_metrics_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "method": pa.Column(str),
        "context": pa.Column(str),
        "n_examples": pa.Column("int64", pa.Check.ge(1)),
        "ndcg10": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
        "recall10": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
        "vs_context": pa.Column(str),
        "n_paired": pa.Column("int64", pa.Check.ge(0)),
        "mean_diff_vs_ref": pa.Column(float, nullable=True),
        "t_pvalue_vs_ref": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
        "wilcoxon_pvalue_vs_ref": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
        "n_paired_vs_base": pa.Column("int64", pa.Check.ge(0)),
        "mean_diff_vs_base": pa.Column(float, nullable=True),
        "t_pvalue_vs_base": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
        "wilcoxon_pvalue_vs_base": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
        # NaN where every score of the row was written before `target_logp` existed (an older warehouse table).
        "target_logp": pa.Column(float, pa.Check.le(0.0), nullable=True),
        "target_logp_diff_vs_base": pa.Column(float, nullable=True),
        "target_logp_t_pvalue_vs_base": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
    },
    unique=["domain", "method", "context"],
    coerce=True,
    strict=True,
    name="rec_metrics",
)

profiles_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "user_id": _user,
        "cut": pa.Column("int64", pa.Check.ge(0)),
        "profile": pa.Column(str),
        "prompt_tokens": pa.Column("int64", pa.Check.ge(1)),
        "profile_tokens": pa.Column("int64", pa.Check.ge(0)),
        "seconds": pa.Column(float, pa.Check.ge(0.0)),
        "method": pa.Column(str),
        "model_version": pa.Column(str),
        "prompt_version": pa.Column(str),
        # DUET methods only, QA examples only: the target-mode user and item profiles (DUET_BUMP A5 #5), read by
        # the rating-only `10H+P+Pi` context and nothing else; absent from Base's and other methods' rows.
        "target_user_profile": pa.Column(str, nullable=True, required=False),
        "target_item_profile": pa.Column(str, nullable=True, required=False),
    },
    unique=["domain", "user_id", "cut", "method"],
    coerce=True,
    strict=True,
    name="profiles",
)

_RATING_ANSWER_COLUMNS = {
    "rating_answer": pa.Column(str),
    "rating_parsed": pa.Column(bool),
    "rating_predicted": pa.Column(float),
    "target_rating": pa.Column(float),
    "rating_abs_error": pa.Column(float, pa.Check.in_range(0.0, 5.0)),
}
_ANSWER_KEY = {
    "domain": _domain,
    "user_id": _user,
    "cut": pa.Column("int64"),
    "method": pa.Column(str),
    "context": pa.Column(str),
}

qa_example_scores_schema = pa.DataFrameSchema(
    {
        **_ANSWER_KEY,
        "mc_answer": pa.Column(str),
        "mc_parsed": pa.Column(bool),
        "mc_correct": pa.Column(float, pa.Check.isin([0.0, 1.0])),
        **_RATING_ANSWER_COLUMNS,
    },
    unique=list(_ANSWER_KEY),
    coerce=True,
    strict=True,
    name="qa_example_scores",
)

duet_rating_scores_schema = pa.DataFrameSchema(
    {**_ANSWER_KEY, **_RATING_ANSWER_COLUMNS},
    unique=list(_ANSWER_KEY),
    coerce=True,
    strict=True,
    name="duet_rating_scores",
)

qa_metrics_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "method": pa.Column(str),
        "context": pa.Column(str),
        "n_examples": pa.Column("int64", pa.Check.ge(1)),
        "mc_accuracy": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
        "rating_mae": pa.Column(float, pa.Check.ge(0.0)),
        "mc_unparsed": pa.Column("int64", pa.Check.ge(0)),
        "rating_unparsed": pa.Column("int64", pa.Check.ge(0)),
        "vs_context": pa.Column(str),
        "n_paired": pa.Column("int64", pa.Check.ge(0)),
        "mean_diff_vs_ref": pa.Column(float, nullable=True),
        "t_pvalue_vs_ref": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
        "wilcoxon_pvalue_vs_ref": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
        "n_paired_vs_base": pa.Column("int64", pa.Check.ge(0)),
        "mean_diff_vs_base": pa.Column(float, nullable=True),
        "t_pvalue_vs_base": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
        "wilcoxon_pvalue_vs_base": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
    },
    unique=["domain", "method", "context"],
    coerce=True,
    strict=True,
    name="qa_metrics",
)

rating_metrics_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "method": pa.Column(str),
        "context": pa.Column(str),
        "n_examples": pa.Column("int64", pa.Check.ge(1)),
        "rating_mae": pa.Column(float, pa.Check.ge(0.0)),
        "rating_rmse": pa.Column(float, pa.Check.ge(0.0)),
        "rating_accuracy": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
        "rating_macro_f1": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
        "rating_mae_parsed": pa.Column(float, pa.Check.ge(0.0), nullable=True),
        "rating_unparsed": pa.Column("int64", pa.Check.ge(0)),
        "vs_method": pa.Column(str),
        "vs_context": pa.Column(str),
        "n_paired": pa.Column("int64", pa.Check.ge(0)),
        "mean_diff_vs_ref": pa.Column(float, nullable=True),
        "t_pvalue_vs_ref": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
        "wilcoxon_pvalue_vs_ref": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True),
    },
    unique=["domain", "method", "context", "vs_method"],
    coerce=True,
    strict=True,
    name="rating_metrics",
)

scl_pairs_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "user_id": _user,
        "cut": pa.Column("int64", pa.Check.ge(0)),
        "method": pa.Column(str),
        "context": pa.Column(str, pa.Check.isin(["10-H", "10H+P"])),
        "anchor": pa.Column(str, pa.Check.str_length(min_value=1)),
        "positive": pa.Column(str, pa.Check.str_length(min_value=1)),
        "target_item_id": pa.Column(str),
        # The profiler whose profiles the anchors hold ("" for the history context): its scores must use profiles
        # of the same one.
        "profile_model_version": pa.Column(str),
    },
    unique=["domain", "user_id", "cut", "method"],
    coerce=True,
    strict=True,
    name="scl_pairs",
)

SCL_SETTINGS = ["cross-domain", "in-domain"]

scl_example_scores_schema = pa.DataFrameSchema(
    {
        **rec_example_scores_schema.columns,
        "setting": pa.Column(str, pa.Check.isin(SCL_SETTINGS)),
        "train_domain": pa.Column(str),
        "embedder_version": pa.Column(str),
    },
    unique=["domain", "user_id", "cut", "method", "setting"],
    coerce=True,
    strict=True,
    name="scl_example_scores",
)

scl_metrics_schema = pa.DataFrameSchema(
    {
        **rec_metrics_schema.columns,
        "setting": pa.Column(str, pa.Check.isin(SCL_SETTINGS)),
        "train_domain": pa.Column(str),
    },
    unique=["domain", "setting", "method", "context"],
    coerce=True,
    strict=True,
    name="scl_metrics",
)

_pvalue = pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True)

ablation_metrics_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "reference": pa.Column(str),
        "method": pa.Column(str),
        # Steps of the checkpoint behind the method's profiles (0: zero-shot; null: no checkpoint recorded).
        "training_steps": pa.Column("Int64", pa.Check.ge(0), nullable=True),
        "context": pa.Column(str, pa.Check.isin(["P", "10H+P"])),
        "n_examples": pa.Column("int64", pa.Check.ge(0)),
        "n_qa": pa.Column("int64", pa.Check.ge(0)),
        "n_paired": pa.Column("int64", pa.Check.ge(0)),
        "n_qa_paired": pa.Column("int64", pa.Check.ge(0)),
        **{
            column: spec
            for metric in ("ndcg10", "recall10", "mc_accuracy")
            for column, spec in (
                (metric, pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True)),
                (f"delta_{metric}", pa.Column(float, pa.Check.in_range(-1.0, 1.0), nullable=True)),
                (f"{metric}_t_pvalue", _pvalue),
                (f"{metric}_wilcoxon_pvalue", _pvalue),
            )
        },
    },
    unique=["domain", "method", "context"],
    coerce=True,
    strict=True,
    name="ablation_metrics",
)

user_embedding_tsne_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "user_id": _user,
        "cut": pa.Column("int64", pa.Check.ge(0)),
        "method": pa.Column(str),
        "context": pa.Column(str, pa.Check.isin(["All-H", "10-H", "10H+P"])),
        "x": pa.Column(float, pa.Check(lambda s: s.abs() < float("inf"), name="finite")),
        "y": pa.Column(float, pa.Check(lambda s: s.abs() < float("inf"), name="finite")),
        "dominant_genre": pa.Column(str),
    },
    unique=["domain", "user_id", "cut", "method", "context"],
    coerce=True,
    strict=True,
    name="user_embedding_tsne",
)

efficiency_frontier_schema = pa.DataFrameSchema(
    {
        "domain": _domain,
        "method": pa.Column(str),
        "context": pa.Column(str, pa.Check.isin(["All-H", "10-H", "10H+P"])),
        "n_examples": pa.Column("int64", pa.Check.ge(1)),
        "ndcg10": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
        "recall10": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
        "generation_seconds": pa.Column(float, pa.Check.ge(0.0)),
        "embedding_seconds": pa.Column(float, pa.Check.ge(0.0)),
        "seconds_per_user": pa.Column(float, pa.Check.ge(0.0)),
        "on_frontier": pa.Column(bool),
    },
    unique=["domain", "method", "context"],
    coerce=True,
    strict=True,
    name="efficiency_frontier",
)
