"""The paper's comparison views per domain: the Table-6 ablation table of BLUE's variants (and of DUET's and
BUMP's), a t-SNE map of every method's user embeddings (§5.3) and the quality / inference-cost frontier (§5.2)."""

import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    MetadataValue,
    MultiPartitionKey,
    asset,
)

from assets._common import PARTITIONED, metadata_table, table_output, typed
from assets.automation import on_upstream_data_change
from assets.partitions import from_domain
from profilekit.analyses import (
    ABLATION_FAMILIES,
    ABLATION_VARIANTS,
    HISTORY_CONTEXTS,
    ablation_tables,
    budget_mismatches,
    dominant_genres,
    efficiency_table,
    embedding_seconds,
    tsne_table,
)
from profilekit.contexts import evaluation_contexts
from profilekit.embedder import Embedder, EmbeddingCache
from profilekit.metrics import REFERENCE_METHOD
from profilekit.plots import frontier_png, markdown_image, tsne_png
from profilekit.protocol import eval_examples
from profilekit.schemas import ablation_metrics_schema, efficiency_frontier_schema, user_embedding_tsne_schema
from resources.embedder import EmbedderResource
from resources.model_store import ModelStore
from resources.protocol import ProtocolResource
from resources.warehouse import WarehouseReader

ANALYSIS = {**PARTITIONED, "group_name": "analyses"}
# Like the metric tables: every trained method's profiles of the domain, a method nobody trained has none.
WITH_TRAINED_PROFILES = {
    **ANALYSIS,
    "deps": [AssetDep("generated_profiles", partition_mapping=from_domain)],
    "automation_condition": on_upstream_data_change(gathered=("generated_profiles",)),
}
MAPPED_CONTEXTS = (*HISTORY_CONTEXTS, "10H+P")


def _training_steps(instance: DagsterInstance, domain: str, methods) -> dict[str, int | None]:
    """Each method's step count, as its latest `generated_profiles` of the domain (the profiles the scores read)
    recorded it from their checkpoint (None: not materialized here, or before profiles recorded it)."""
    steps = {}
    for method in methods:
        key = str(MultiPartitionKey({"method": method, "domain": domain}))
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("generated_profiles"), asset_partitions=[key]), limit=1).records
        step = records[0].asset_materialization.metadata.get("checkpoint_step") if records else None
        steps[method] = None if step is None else int(step.value)
    return steps


@asset(**ANALYSIS, code_version="3", **typed(ablation_metrics_schema))  # 3: each method's training steps
def ablation_metrics(context: AssetExecutionContext, rec_example_scores: pd.DataFrame,
                     qa_example_scores: pd.DataFrame):
    """Table 6 of the domain: N@10 / R@10 of P and 10H+P and QA next-item accuracy of BLUE and of every trained
    `blue-*` variant, each variant's difference to BLUE paired-tested on the same users (t-test, Wilcoxon); then
    the same rows for the `duet-*` and `bump-*` variants with profiles (DUET zero-shot among them) against DUET
    and BUMP (column `reference`). Each row carries its checkpoint's step count, and a variant trained for another
    budget than its reference (say, a UI backfill left at the default steps) is named in `budget_mismatch`."""
    family = {m for reference, variants in ABLATION_FAMILIES.items() for m in (reference, *variants)}
    table = ablation_tables(rec_example_scores, qa_example_scores,
                            _training_steps(context.instance, context.partition_key, sorted(family)))
    mismatches = budget_mismatches(table)
    if mismatches:
        context.log.warning("ablation variants with another budget than their reference: " + "; ".join(mismatches))
    blue = table[table["reference"] == REFERENCE_METHOD]
    missing = [m for m in ABLATION_VARIANTS if m not in set(blue["method"])]
    yield table_output(table, summary=metadata_table(table), variants=len(set(blue["method"]) - {REFERENCE_METHOD}),
                       not_trained=MetadataValue.text(", ".join(missing) or "none"),
                       budget_mismatch=MetadataValue.text("; ".join(mismatches) or "none"),
                       references=MetadataValue.text(", ".join(dict.fromkeys(table["reference"])) or "none"))


def _mapped_contexts(domain: str, filtered_histories: pd.DataFrame, items: pd.DataFrame, base_profiles: pd.DataFrame,
                     model: Embedder, protocol: ProtocolResource, warehouse_reader: WarehouseReader):
    """The evaluated users' texts the t-SNE and the frontier look at (All-H, 10-H, and every method's 10H+P, as
    `recommendation_eval` builds them), in a fixed order, and the examples they come from."""
    proto = protocol.get()
    examples = eval_examples(filtered_histories, proto)
    trained = warehouse_reader.domain_rows("generated_profiles", domain)
    contexts = evaluation_contexts(examples, items, base_profiles, trained, model.count_tokens, model.max_seq_length,
                                   proto.recent_k)
    contexts = contexts[contexts["context"].isin(MAPPED_CONTEXTS)]
    # Warehouse reads come in no set order; the projection must see the same rows in the same order every time.
    return contexts.sort_values(["method", "context", "user_id", "cut"]).reset_index(drop=True), examples


@asset(**WITH_TRAINED_PROFILES, code_version="1", **typed(user_embedding_tsne_schema))
def user_embedding_tsne(
    context: AssetExecutionContext, filtered_histories: pd.DataFrame, items: pd.DataFrame,
    base_profiles: pd.DataFrame, embedder: EmbedderResource, model_store: ModelStore, protocol: ProtocolResource,
    warehouse_reader: WarehouseReader,
):
    """2-D t-SNE (scikit-learn, seeded with the protocol seed) of the frozen embedder's vectors of every evaluated
    user's All-H, 10-H and each method's 10H+P text, projected together; a plot coloured by method and one by the
    user's dominant genre / category."""
    model = embedder.load()
    contexts, examples = _mapped_contexts(context.partition_key, filtered_histories, items, base_profiles, model,
                                          protocol, warehouse_reader)
    vectors, _ = EmbeddingCache(model_store.embedding_cache, model.version).encode(contexts["text"].tolist(), model)
    table = tsne_table(contexts, vectors, dominant_genres(examples, items), protocol.get().seed)
    plot = tsne_png(table, f"user embeddings on {context.partition_key} (t-SNE)")
    by_method = table.groupby(["method", "context"], as_index=False).agg(points=("x", "size"), x_mean=("x", "mean"),
                                                                        y_mean=("y", "mean"))
    genres = table.drop_duplicates(["user_id", "cut"])["dominant_genre"].value_counts().rename_axis("dominant_genre")
    yield table_output(table, plot=MetadataValue.md(markdown_image(plot, "t-SNE of user embeddings")),
                       by_method=metadata_table(by_method), users_by_genre=metadata_table(genres.reset_index(name="users")),
                       embedder_version=model.version)


@asset(**WITH_TRAINED_PROFILES, code_version="2", **typed(efficiency_frontier_schema))  # 2: timed on a sample
def efficiency_frontier(
    context: AssetExecutionContext, rec_metrics: pd.DataFrame, filtered_histories: pd.DataFrame, items: pd.DataFrame,
    base_profiles: pd.DataFrame, embedder: EmbedderResource, protocol: ProtocolResource,
    warehouse_reader: WarehouseReader,
):
    """N@10 of each method's 10H+P (and of All-H, 10-H) against inference seconds per user: the profile's
    generation seconds recorded when it was generated (the generation cache keeps them, so a cached profile
    still reports what it cost) + the frozen embedder's seconds per user text, measured now without the
    embedding cache on a fixed sample of up to 256 of the texts; the points no other point beats on both are the
    frontier."""
    model = embedder.load()
    domain = context.partition_key
    contexts, _ = _mapped_contexts(domain, filtered_histories, items, base_profiles, model, protocol, warehouse_reader)
    embed = pd.DataFrame(
        [(method, ctx, embedding_seconds(rows["text"].tolist(), model.encode))
         for (method, ctx), rows in contexts.groupby(["method", "context"], sort=True)],
        columns=["method", "context", "seconds_per_user"],
    )
    trained = warehouse_reader.domain_rows("generated_profiles", domain)
    profiles = pd.concat([base_profiles, trained], ignore_index=True) if len(trained) else base_profiles
    table = efficiency_table(rec_metrics, profiles[["method", "seconds"]], embed)
    plot = frontier_png(table, f"quality vs inference cost on {domain}")
    yield table_output(table, plot=MetadataValue.md(markdown_image(plot, "efficiency frontier")),
                       summary=metadata_table(table),
                       frontier=MetadataValue.text(", ".join(f"{r.method}/{r.context}" for r in
                                                             table[table["on_frontier"]].itertuples())))
