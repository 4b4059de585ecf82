"""SCL embedder adaptation (METHOD §6) and its cross-domain / in-domain evaluation grid (§8, Tables 3 and 5).

Partitioned by context method (`partitions.SCL_METHODS`: history, Base and the trained methods BLUE, RLAIF, RLPF,
LangPTune, DUET and BUMP) x domain: a domain's embedder is
adapted on its own train users; each evaluated domain is scored with the source domain's embedder
(cross-domain) and with its own (in-domain)."""


import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    Failure,
    MetadataValue,
    asset,
)

from assets._common import (
    ARTIFACT,
    LLM_HEAVY,
    ONE_PARTITION_PER_RUN,
    PARTITIONED,
    artifact_output,
    frame_version,
    metadata_table,
    table_output,
    typed,
)
from assets.automation import on_upstream_data_change
from assets.partitions import (
    from_domain,
    from_generated_profiles,
    from_scl_embedders,
    from_scl_source_checkpoint,
    scl_partitions,
)
from assets.profiles import trained_profiler
from profilekit.embedder import Embedder
from profilekit.evaluation import metrics_by_setting, score_with_embedders
from profilekit.methods import METHODS
from profilekit.plots import grouped_bars_png, loss_curve_png, markdown_image
from profilekit.profiler import GenerationCache, generate_profiles
from profilekit.prompts import PROFILE_PROMPTS
from profilekit.protocol import eval_examples, scl_train_examples
from profilekit.schemas import scl_example_scores_schema, scl_metrics_schema, scl_pairs_schema
from profilekit.scl import HISTORY, scl_run_key, train_scl, training_pairs
from profilekit.sources import dir_content_hash
from resources.artifacts import BY_PARTITION, Artifact
from resources.embedder import EmbedderResource
from resources.llm import ProfilerLLMResource
from resources.model_store import ModelStore
from resources.protocol import ProtocolResource
from resources.training import SCLResource
from resources.warehouse import WarehouseReader

SCL_PARTITIONED = {
    "partitions_def": scl_partitions,
    "backfill_policy": ONE_PARTITION_PER_RUN,
    "automation_condition": on_upstream_data_change(),
    "group_name": "adaptation",
}
SCL_TABLE = {**SCL_PARTITIONED, "metadata": {"partition_expr": {"method": "method", "domain": "domain"}}, "io_manager_key": "warehouse"}
FROM_DOMAIN = {name: AssetIn(partition_mapping=from_domain) for name in ("filtered_histories", "candidate_sets", "items")}


@asset(
    **SCL_TABLE, code_version="5",  # 5: the profiles' model version in each pair
    ins={
        **{k: FROM_DOMAIN[k] for k in ("filtered_histories", "items")},
        # Trained methods' source-domain checkpoint; none for the history and Base contexts.
        "profiler_checkpoint": AssetIn(partition_mapping=from_scl_source_checkpoint, metadata=BY_PARTITION),
        "profiler_base_weights": AssetIn(),
    },
    op_tags=LLM_HEAVY, **typed(scl_pairs_schema),
)
def scl_training_pairs(
    context: AssetExecutionContext, filtered_histories: pd.DataFrame, items: pd.DataFrame,
    profiler_checkpoint: dict[str, Artifact | None], profiler_base_weights: Artifact,
    profiler_llm: ProfilerLLMResource, model_store: ModelStore, protocol: ProtocolResource,
):
    """(user text, next item text) of the domain's SCL train users: 10-H, or 10H + the method's profile (Base:
    zero-shot; a trained method: its source-domain checkpoint), generated through the generation cache."""
    method = context.partition_key.keys_by_dimension["method"]
    examples = scl_train_examples(filtered_histories, protocol.get())
    if examples.empty:
        raise Failure(f"domain {context.partition_key.keys_by_dimension['domain']!r} has no train users for SCL")
    profiles, generated_now, version = None, 0, ""
    if method != HISTORY:
        if method == "Base":
            chat = profiler_llm.chat(profiler_base_weights)
            version = chat.version
        else:
            checkpoint = next((c for c in profiler_checkpoint.values() if c is not None), None)
            if checkpoint is None:
                raise Failure(f"no {method} checkpoint trained on the source domain ({', '.join(profiler_checkpoint)}): "
                              "materialize profiler_checkpoint first")
            chat, version = trained_profiler(checkpoint, profiler_base_weights, profiler_llm), checkpoint.version
        cache = GenerationCache(model_store.generation_cache, version)
        prompt = PROFILE_PROMPTS[METHODS[method].prompt] if method in METHODS else PROFILE_PROMPTS["profile"]
        sampling = profiler_llm.sampling(METHODS[method].min_new_tokens if method in METHODS else None)
        profiles, generated_now = generate_profiles(chat, examples, items, profiler_llm.history_budget_tokens,
                                                    sampling, cache, f"{method} profiles for SCL pairs", prompt)
    pairs = training_pairs(examples, items, profiles, protocol.recent_k, method).assign(profile_model_version=version)
    empty = int((profiles["profile"].str.strip() == "").sum()) if profiles is not None else 0  # kept: 10H + nothing
    yield table_output(pairs, train_users=int(pairs["user_id"].nunique()), profiles_generated_now=generated_now,
                       empty_profiles=empty)


def _model_versions(versions: pd.Series) -> str:
    """The profile model versions of a table, as one comparable string (the SCL embedder's record of what it was
    adapted on is compared with the one of the profiles it would score)."""
    return ",".join(sorted(set(versions)))


@asset(**SCL_PARTITIONED, code_version="3", **ARTIFACT)  # 3: records its pairs' profile model version
def scl_embedder(
    context: AssetExecutionContext, scl_training_pairs: pd.DataFrame, embedder: EmbedderResource,
    model_store: ModelStore, scl: SCLResource,
):
    """The frozen embedder fine-tuned with symmetric in-batch InfoNCE on the partition's pairs (sentence-
    transformers trainer); saved through the model store; a run with the same pairs and budgets is not repeated."""
    keys = context.partition_key.keys_by_dimension
    base, config = embedder.load(), scl.config()
    run = scl_run_key(config, base.version, frame_version(scl_training_pairs).value)
    # The run folder holds the model and its training log (fetched together when another machine trained it).
    model_dir = model_store.path("scl_embedder", keys["domain"], f"{keys['method']}/{run}") / "model"
    pairs = scl_training_pairs
    result = train_scl(base.model_path, pairs["anchor"].tolist(), pairs["positive"].tolist(), config, model_dir, context.log.info)
    version = f"{model_dir.name}-{dir_content_hash(model_dir)}"
    log = pd.DataFrame(result.log)
    profiles_from = _model_versions(pairs["profile_model_version"])
    return artifact_output(
        # the run folder: the model and its training log
        Artifact(model_dir.parent, version, {"run": run, "profile_model_version": profiles_from}),
        embedder_version=version, base_embedder_version=base.version, pairs=len(pairs), steps=result.steps,
        trained_now=result.trained_now, seconds=round(result.seconds, 1),
        final_loss=float(log["loss"].iloc[-1]) if len(log) else float("nan"),
        loss_curve=MetadataValue.md(markdown_image(loss_curve_png(result.log, f"SCL {keys['method']} on {keys['domain']}"), "SCL loss")),
        log=MetadataValue.md(log.round(6).to_markdown(index=False)),
    )


def _eval_profiles(method: str, domain: str, warehouse_reader: WarehouseReader) -> pd.DataFrame | None:
    """The method's profiles of the domain's evaluated users (None for the history context)."""
    if method == HISTORY:
        return None
    table = "base_profiles" if method == "Base" else "generated_profiles"
    rows = warehouse_reader.domain_rows(table, domain)
    rows = rows[rows["method"] == method] if len(rows) else rows
    if rows.empty:
        raise Failure(f"no {method} profiles of {domain}: materialize {table} for it first")
    return rows


@asset(
    **SCL_TABLE, code_version="4",  # 4: refuses profiles of another model than its embedders' pairs
    ins={**FROM_DOMAIN, "scl_embedder": AssetIn(partition_mapping=from_scl_embedders, metadata=BY_PARTITION)},
    deps=[AssetDep("base_profiles", partition_mapping=from_domain),
          AssetDep("generated_profiles", partition_mapping=from_generated_profiles)],
    **typed(scl_example_scores_schema),
)
def scl_example_scores(
    context: AssetExecutionContext, filtered_histories: pd.DataFrame, candidate_sets: pd.DataFrame, items: pd.DataFrame,
    scl_embedder: dict[str, Artifact | None], model_store: ModelStore, protocol: ProtocolResource,
    warehouse_reader: WarehouseReader,
):
    """Rank, N@10 and R@10 of each evaluated test user's target with the context's adapted embedders: the one
    adapted on the source domain (cross-domain) and the domain's own (in-domain). Item vectors are cached per
    embedder version; a setting whose embedder does not exist yet is reported, not scored."""
    method, domain = context.partition_key.keys_by_dimension["method"], context.partition_key.keys_by_dimension["domain"]
    examples = eval_examples(filtered_histories, protocol.get())
    profiles = _eval_profiles(method, domain, warehouse_reader)
    contexts = training_pairs(examples, items, profiles, protocol.recent_k, method)
    contexts = contexts.rename(columns={"anchor": "text"})
    # The mapping hands over the embedder adapted on the domain itself and the one adapted on the source domain
    # (one and the same when the domain is the source).
    by_domain = {key.keys_by_dimension["domain"]: artifact for key, artifact in scl_embedder.items()}
    source = next((d for d in by_domain if d != domain), domain)
    settings = {"cross-domain": source, "in-domain": domain}
    missing = [f"{setting} ({method}|{d})" for setting, d in settings.items() if by_domain.get(d) is None]
    embedders = {s: (d, Embedder(by_domain[d].path / "model")) for s, d in settings.items() if by_domain.get(d) is not None}
    if not embedders:
        raise Failure(f"no SCL embedder of {method} for {domain}: materialize scl_embedder {method}|{source} "
                      f"(cross-domain) or {method}|{domain} (in-domain) first")
    # An embedder adapted on one checkpoint's profiles says nothing about another's (e.g. after a retraining).
    scored = _model_versions(profiles["model_version"]) if profiles is not None else ""
    trained_on = {d: by_domain[d].info.get("profile_model_version") for d, _ in embedders.values()}
    stale = {d: v for d, v in trained_on.items() if v is not None and v != scored}
    if stale:
        raise Failure(f"the {method} profiles of {domain} come from model {scored!r}, but the SCL embedder of "
                      + ", ".join(f"{method}|{d} was adapted on profiles of {v!r}" for d, v in stale.items())
                      + f": materialize scl_training_pairs and scl_embedder {', '.join(f'{method}|{d}' for d in stale)} again")
    unchecked = sorted(d for d, v in trained_on.items() if v is None)  # recorded before embedders named their profiles
    scores, encoded_now = score_with_embedders(contexts, candidate_sets, items, embedders, model_store.embedding_cache)
    yield table_output(scores, settings_missing=", ".join(missing) or "none",
                       item_vectors_encoded_now=encoded_now, profile_model_version=scored or "none",
                       embedders_profile_version_unchecked=", ".join(unchecked) or "none")


@asset(**{**PARTITIONED, "automation_condition": on_upstream_data_change(gathered=("scl_example_scores",))}, code_version="2",
       group_name="adaptation", deps=[AssetDep(scl_example_scores, partition_mapping=from_domain)], **typed(scl_metrics_schema))
def scl_metrics(context: AssetExecutionContext, warehouse_reader: WarehouseReader):
    """Tables 3 / 5 of the domain: mean N@10 and R@10 per setting and context with the adapted embedders, each
    paired-tested against BLUE+SCL and against Base+SCL of the same setting on the same users."""
    scores = warehouse_reader.domain_rows("scl_example_scores", context.partition_key)
    if scores.empty:
        raise Failure(f"no scl_example_scores for {context.partition_key}: materialize them first")
    metrics = metrics_by_setting(scores)
    chart = grouped_bars_png(metrics.assign(domain=metrics["setting"]), "ndcg10", f"NDCG@10 with SCL on {context.partition_key}")
    yield table_output(metrics, summary=metadata_table(metrics),
                       chart=MetadataValue.md(markdown_image(chart, "NDCG@10 with SCL")))
