"""Frozen-embedder item vectors, recommendation metrics (All-H, 10-H, P, 10H+P) and personalized QA."""

import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetOut,
    MetadataValue,
    asset,
    multi_asset,
)

from assets._common import (
    ARTIFACT,
    LLM_HEAVY,
    ONE_PARTITION_PER_RUN,
    TABLE_OUT,
    artifact_output,
    metadata_table,
    table_output,
    typed,
)
from assets.automation import on_upstream_data_change
from assets.partitions import domain_partitions, from_domain
from profilekit.contexts import duet_rating_contexts, evaluation_contexts
from profilekit.duet import rating_scale
from profilekit.embedder import EmbeddingCache
from profilekit.evaluation import rank_metrics, score_contexts
from profilekit.metrics import with_significance
from profilekit.plots import grouped_bars_png, markdown_image
from profilekit.profiler import GenerationCache
from profilekit.protocol import eval_examples
from profilekit.qa import answer_questions, answer_ratings, question_sets, rating_metrics_table, summarize_qa
from profilekit.schemas import (
    duet_rating_scores_schema,
    qa_example_scores_schema,
    qa_metrics_schema,
    rating_metrics_schema,
    rec_example_scores_schema,
    rec_metrics_schema,
)
from profilekit.vectors import load_item_vectors, save_item_vectors
from resources.artifacts import Artifact
from resources.embedder import EmbedderResource
from resources.llm import JudgeLLMResource
from resources.model_store import ModelStore
from resources.protocol import ProtocolResource
from resources.warehouse import WarehouseReader

# Every trained method's profiles of the domain (methods never trained simply have no rows, and do not hold
# back the automation of the metrics).
TRAINED_PROFILES = AssetDep("generated_profiles", partition_mapping=from_domain)
METRIC_TABLE = {**TABLE_OUT, "automation_condition": on_upstream_data_change(gathered=("generated_profiles",))}


def _headline(metrics: pd.DataFrame, column: str, label: str) -> MetadataValue:
    """The metric of every method/context in one line (what `make run` prints when the table is written)."""
    values = ", ".join(f"{r.method}/{r.context} {getattr(r, column):.3f}" for r in metrics.itertuples(index=False))
    return MetadataValue.text(f"{label}: {values}")


@asset(
    partitions_def=domain_partitions, backfill_policy=ONE_PARTITION_PER_RUN, automation_condition=on_upstream_data_change(),
    code_version="2", group_name="embeddings", **ARTIFACT,
)
def item_embeddings(context: AssetExecutionContext, items: pd.DataFrame, embedder: EmbedderResource, model_store: ModelStore):
    """L2-normalised item-text vectors of the frozen embedder; cached by embedder version + text hash."""
    model = embedder.load()
    cache = EmbeddingCache(model_store.embedding_cache, model.version)
    vectors, encoded_now = cache.encode(items["text"].tolist(), model, progress=True)
    path = model_store.path("item_embeddings", context.partition_key, "items.npz")
    digest = save_item_vectors(path, items["item_id"].tolist(), vectors, model.version)
    return artifact_output(
        Artifact(path, digest, {"embedder_version": model.version}),
        items=len(items), dim=int(vectors.shape[1]), embedder_version=model.version, encoded_now=encoded_now,
        from_cache=len(items) - encoded_now,
    )


@multi_asset(
    outs={
        "rec_example_scores": AssetOut(**METRIC_TABLE, code_version="4", **typed(rec_example_scores_schema), group_name="evaluation"),
        "rec_metrics": AssetOut(**METRIC_TABLE, code_version="4", **typed(rec_metrics_schema), group_name="evaluation"),
    },
    partitions_def=domain_partitions,
    backfill_policy=ONE_PARTITION_PER_RUN,
    deps=[TRAINED_PROFILES],
)
def recommendation_eval(
    context: AssetExecutionContext,
    filtered_histories: pd.DataFrame,
    candidate_sets: pd.DataFrame,
    items: pd.DataFrame,
    base_profiles: pd.DataFrame,
    item_embeddings: Artifact,
    embedder: EmbedderResource,
    model_store: ModelStore,
    protocol: ProtocolResource,
    warehouse_reader: WarehouseReader,
):
    """N@10 / R@10 per evaluated test user and context (history, Base and every trained method's P / 10H+P);
    per-example scores kept, and each method paired-tested against BLUE on the same examples."""
    model, proto = embedder.load(), protocol.get()
    item_vectors = load_item_vectors(item_embeddings.path, model.version)
    examples = eval_examples(filtered_histories, protocol.get())
    trained = warehouse_reader.domain_rows("generated_profiles", context.partition_key)
    contexts = evaluation_contexts(examples, items, base_profiles, trained, model.count_tokens, model.max_seq_length,
                                   proto.recent_k)
    cache = EmbeddingCache(model_store.embedding_cache, model.version)
    scores = score_contexts(contexts, candidate_sets, item_vectors, model, cache)
    metrics = rank_metrics(scores)
    yield table_output(scores, "rec_example_scores", evaluated_users=examples["user_id"].nunique())
    chart = markdown_image(grouped_bars_png(metrics, "ndcg10", "NDCG@10 by context"), "NDCG@10")
    yield table_output(metrics, "rec_metrics", summary=metadata_table(metrics), chart=MetadataValue.md(chart),
                       headline=_headline(metrics, "ndcg10", "N@10"))


@multi_asset(
    outs={
        "qa_example_scores": AssetOut(**METRIC_TABLE, code_version="3", **typed(qa_example_scores_schema), group_name="evaluation"),
        "qa_metrics": AssetOut(**METRIC_TABLE, code_version="3", **typed(qa_metrics_schema), group_name="evaluation"),
        "duet_rating_scores": AssetOut(**METRIC_TABLE, code_version="1", **typed(duet_rating_scores_schema),
                                       group_name="evaluation"),
    },
    partitions_def=domain_partitions,
    backfill_policy=ONE_PARTITION_PER_RUN,
    deps=[TRAINED_PROFILES],
    op_tags=LLM_HEAVY,
)
def qa_eval(
    context: AssetExecutionContext,
    filtered_histories: pd.DataFrame,
    candidate_sets: pd.DataFrame,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    base_profiles: pd.DataFrame,
    profiler_base_weights: Artifact,
    judge_llm: JudgeLLMResource,
    model_store: ModelStore,
    protocol: ProtocolResource,
    warehouse_reader: WarehouseReader,
):
    """Next-item multiple choice (accuracy) and rating (MAE) answered by the judge LLM from each context, with
    each method's accuracy paired-tested against BLUE's; and DUET's native rating row (`duet_rating_scores`): the
    rating question alone from 10H + the target-mode user and item profiles (`10H+P+Pi`), kept out of
    `qa_example_scores` so that no next-item answer can read a profile written knowing the target."""
    proto = protocol.get()
    examples = eval_examples(filtered_histories, proto, proto.max_qa_users)
    judge = judge_llm.chat(profiler_base_weights)
    trained = warehouse_reader.domain_rows("generated_profiles", context.partition_key)
    contexts = evaluation_contexts(examples, items, base_profiles, trained, judge.count_tokens,
                                   judge_llm.context_budget_tokens, proto.recent_k)
    questions = question_sets(examples, candidate_sets, items, proto.seed)
    cache = GenerationCache(model_store.generation_cache, judge.version)
    rating_fallback, scale = float(interactions["rating"].mean()), rating_scale(interactions["rating"])
    scores = answer_questions(judge, contexts, questions, judge_llm.sampling(), rating_fallback, cache,
                              (scale.low, scale.high))
    metrics = with_significance(summarize_qa(scores), scores, "mc_correct")
    native = duet_rating_contexts(examples, items, trained, proto.recent_k)
    native_scores = answer_ratings(judge, native, questions, judge_llm.sampling(), rating_fallback, cache,
                                   (scale.low, scale.high))
    yield table_output(scores, "qa_example_scores", judge_version=judge.version)
    yield table_output(native_scores, "duet_rating_scores", judge_version=judge.version,
                       methods=MetadataValue.text(", ".join(sorted(native_scores["method"].unique()))))
    chart = markdown_image(grouped_bars_png(metrics, "mc_accuracy", "next-item MC accuracy by context"), "MC accuracy")
    yield table_output(metrics, "qa_metrics", summary=metadata_table(metrics), chart=MetadataValue.md(chart),
                       headline=_headline(metrics, "mc_accuracy", "MC accuracy"))


@asset(
    partitions_def=domain_partitions, backfill_policy=ONE_PARTITION_PER_RUN, code_version="3", group_name="evaluation",
    deps=["duet_rating_scores"], **TABLE_OUT, **typed(rating_metrics_schema),
)
def rating_metrics(context: AssetExecutionContext, qa_example_scores: pd.DataFrame, interactions: pd.DataFrame,
                   warehouse_reader: WarehouseReader):
    """DUET's home metrics for every method's and context's rating answers (MAE, RMSE, accuracy and macro-F1 of
    the rating rounded on the domain's observed scale), each paired-tested on the absolute error against Base and
    against BLUE on the same examples; DUET's `10H+P+Pi` rows (`duet_rating_scores`) are paired with the
    reference's 10H+P."""
    # Read from the warehouse, not as an input: a domain without DUET profiles writes no rows, so no table.
    native = warehouse_reader.domain_rows("duet_rating_scores", context.partition_key)
    columns = list(duet_rating_scores_schema.columns)
    answers = pd.concat([qa_example_scores[columns], *([native[columns]] if len(native) else [])], ignore_index=True)
    table = rating_metrics_table(answers, rating_scale(interactions["rating"]))
    return table_output(table, summary=metadata_table(table),
                        headline=_headline(table[table["vs_method"] == "Base"], "rating_mae", "rating MAE"))
