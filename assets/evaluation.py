"""Frozen-embedder item vectors and recommendation metrics of the raw-history contexts (All-H, 10-H)."""

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetOut,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset,
)

from assets._common import PARTITIONED, TABLE_OUT, table_output, typed
from orchestration.automation import on_upstream_data_change
from orchestration.partitions import domain_partitions
from profilekit.embedder import EmbeddingCache
from profilekit.evaluation import raw_history_contexts, score_contexts, summarize
from profilekit.protocol import eval_users
from profilekit.schemas import rec_example_scores_schema, rec_metrics_schema
from profilekit.vectors import load_item_vectors, save_item_vectors
from resources.embedder import EmbedderResource
from resources.model_store import LocalModelStore
from resources.protocol import ProtocolResource


@asset(
    partitions_def=domain_partitions,
    automation_condition=on_upstream_data_change(),
    code_version="1",
    group_name="embeddings",
)
def item_embeddings(
    context: AssetExecutionContext, items: pd.DataFrame, embedder: EmbedderResource, model_store: LocalModelStore
) -> MaterializeResult:
    """L2-normalised item-text vectors of the frozen embedder; cached by embedder version + text hash."""
    model = embedder.load()
    cache = EmbeddingCache(model_store.embedding_cache, model.version)
    vectors, encoded_now = cache.encode(items["text"].tolist(), model)
    path = model_store.path("item_embeddings", context.partition_key, "items.npz")
    digest = save_item_vectors(path, items["item_id"].tolist(), vectors, model.version)
    return MaterializeResult(
        data_version=DataVersion(digest),
        metadata={
            "path": MetadataValue.path(str(path)),
            "items": len(items),
            "dim": int(vectors.shape[1]),
            "embedder_version": model.version,
            "encoded_now": encoded_now,
            "from_cache": len(items) - encoded_now,
        },
    )


@multi_asset(
    outs={
        "rec_example_scores": AssetOut(**TABLE_OUT, code_version="1", **typed(rec_example_scores_schema), group_name="evaluation"),
        "rec_metrics": AssetOut(**TABLE_OUT, code_version="1", **typed(rec_metrics_schema), group_name="evaluation"),
    },
    partitions_def=domain_partitions,
    deps=["item_embeddings"],
)
def raw_history_metrics(
    context: AssetExecutionContext,
    filtered_histories: pd.DataFrame,
    candidate_sets: pd.DataFrame,
    items: pd.DataFrame,
    embedder: EmbedderResource,
    model_store: LocalModelStore,
    protocol: ProtocolResource,
):
    """N@10 / R@10 of All-H and 10-H for the evaluated test users; per-example scores kept for paired tests."""
    model, proto = embedder.load(), protocol.get()
    item_vectors = load_item_vectors(model_store.path("item_embeddings", context.partition_key, "items.npz"), model.version)
    users = set(eval_users(filtered_histories, proto))
    examples = filtered_histories[(filtered_histories["split"] == "test") & filtered_histories["user_id"].isin(users)]
    contexts = raw_history_contexts(examples, items, model, proto.recent_k)
    cache = EmbeddingCache(model_store.embedding_cache, model.version)
    scores = score_contexts(contexts, candidate_sets, item_vectors, model, cache)
    metrics = summarize(scores)
    yield table_output(scores, "rec_example_scores", evaluated_users=len(users))
    yield table_output(metrics, "rec_metrics", summary=MetadataValue.md(metrics.to_markdown(index=False, floatfmt=".4f")))
