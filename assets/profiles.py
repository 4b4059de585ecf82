"""Profiler weights, zero-shot (Base) profiles and the profiles of trained methods."""

import json

import pandas as pd
from dagster import AssetDep, AssetExecutionContext, AssetIn, DataVersion, Failure, MaterializeResult, MetadataValue, asset

from assets._common import ONE_PARTITION_PER_RUN, LLM_HEAVY, PARTITIONED, table_output, typed
from orchestration.automation import on_upstream_data_change
from orchestration.partitions import from_domain, from_source_checkpoint, method_domain_partitions, source_domain
from profilekit.llm.export import export_gguf_to_hf, packaged_gguf
from profilekit.sources import dir_content_hash
from profilekit.profiler import GenerationCache, generate_profiles
from profilekit.prompts import PROMPT_VERSION
from profilekit.protocol import eval_examples
from profilekit.schemas import profiles_schema
from profilekit.training import load_trained_policy
from resources.llm import ProfilerLLMResource
from resources.model_store import ModelStore
from resources.protocol import ProtocolResource


@asset(code_version="1", group_name="profiler", automation_condition=on_upstream_data_change())
def profiler_base_weights(profiler_llm: ProfilerLLMResource, model_store: ModelStore) -> MaterializeResult:
    """HF-layout safetensors of the profiler: the packaged SmolLM2 GGUF dequantised once (lossy copy of the
    original weights), or the user's own directory; the data version is the directory's content hash."""
    weights = profiler_llm.resolve_weights(model_store)
    if not profiler_llm.weights_dir:
        export_gguf_to_hf(packaged_gguf(model_store.source_cache), weights)
    digest = dir_content_hash(weights)
    return MaterializeResult(
        data_version=DataVersion(digest),
        metadata={"path": MetadataValue.path(str(weights)), "content_hash": digest, "files": len(list(weights.iterdir()))},
    )


def _profile_table(context, chat, examples, items, profiler_llm, model_store, method: str, model_version: str):
    """Profiles of `examples` at inference temperature, through the generation cache (only prompts that changed
    since an earlier run reach the model), with the table's metadata."""
    cache = GenerationCache(model_store.generation_cache, model_version)
    profiles, generated_now = generate_profiles(
        chat, examples, items, profiler_llm.history_budget_tokens, profiler_llm.sampling(), cache, f"{method} profiles"
    )
    profiles = profiles.assign(method=method, model_version=model_version, prompt_version=PROMPT_VERSION)
    context.log.info(f"{len(profiles)} {method} profiles, {generated_now} generated now, the rest unchanged (cached)")
    return table_output(
        profiles,
        users=len(profiles),
        generated_now=generated_now,
        mean_profile_tokens=float(profiles["profile_tokens"].mean()) if len(profiles) else 0.0,
        seconds_per_user=float(profiles["seconds"].mean()) if len(profiles) else 0.0,
        empty_profiles=int((profiles["profile"].str.strip() == "").sum()),
    )


def trained_profiler(method: str, profiler_llm: ProfilerLLMResource, model_store: ModelStore):
    """The profiler with `method`'s checkpoint trained on the source domain, and that checkpoint's digest (the
    version its generations are cached under)."""
    pointer = model_store.path("profiler_checkpoint", method, f"{source_domain()}/current.json")
    if not pointer.exists():
        raise Failure(f"no {method} checkpoint trained on {source_domain()}: materialize profiler_checkpoint "
                      f"partition {method}|{source_domain()} first")
    checkpoint = json.loads(pointer.read_text())
    chat = profiler_llm.fresh_chat(model_store)
    if checkpoint["base_version"] != chat.version:
        raise Failure(f"the {method} checkpoint was trained from profiler weights {checkpoint['base_version']}, the "
                      f"profiler_llm resource now loads {chat.version}: re-materialize profiler_checkpoint")
    chat, _ = load_trained_policy(chat, model_store.path("profiler_checkpoint", method, checkpoint["run"]))
    return chat, checkpoint["digest"]


@asset(
    **PARTITIONED,
    code_version="2",
    group_name="profiler",
    deps=[profiler_base_weights],
    op_tags=LLM_HEAVY,
    **typed(profiles_schema),
)
def base_profiles(
    context: AssetExecutionContext,
    filtered_histories: pd.DataFrame,
    items: pd.DataFrame,
    profiler_llm: ProfilerLLMResource,
    model_store: ModelStore,
    protocol: ProtocolResource,
):
    """Zero-shot profiles of the evaluated test users (temperature 0.7), with token counts and seconds; only
    users whose prompt changed since an earlier run are generated again (the nightly refresh relies on it)."""
    chat = profiler_llm.chat(model_store)
    examples = eval_examples(filtered_histories, protocol.get())
    yield _profile_table(context, chat, examples, items, profiler_llm, model_store, "Base", chat.version)


@asset(
    partitions_def=method_domain_partitions,
    backfill_policy=ONE_PARTITION_PER_RUN,
    metadata={"partition_expr": {"method": "method", "domain": "domain"}},
    io_manager_key="warehouse",
    automation_condition=on_upstream_data_change(),
    code_version="1",
    group_name="training",
    ins={name: AssetIn(partition_mapping=from_domain) for name in ("filtered_histories", "items")},
    deps=[AssetDep("profiler_checkpoint", partition_mapping=from_source_checkpoint)],
    op_tags=LLM_HEAVY,
    **typed(profiles_schema),
)
def generated_profiles(
    context: AssetExecutionContext,
    filtered_histories: pd.DataFrame,
    items: pd.DataFrame,
    profiler_llm: ProfilerLLMResource,
    model_store: ModelStore,
    protocol: ProtocolResource,
):
    """Profiles of a domain's evaluated test users written by a trained method's checkpoint (the one trained on
    the source domain), at inference temperature 0.7; unchanged users come from the generation cache."""
    method = context.partition_key.keys_by_dimension["method"]
    chat, version = trained_profiler(method, profiler_llm, model_store)
    examples = eval_examples(filtered_histories, protocol.get())
    yield _profile_table(context, chat, examples, items, profiler_llm, model_store, method, version)
