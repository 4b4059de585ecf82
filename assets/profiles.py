"""Profiler weights and zero-shot (Base) profiles."""

import pandas as pd
from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from assets._common import LLM_HEAVY, PARTITIONED, table_output, typed
from orchestration.automation import on_upstream_data_change
from profilekit.llm.export import export_gguf_to_hf, packaged_gguf
from profilekit.sources import dir_content_hash
from profilekit.profiler import GenerationCache, generate_profiles
from profilekit.prompts import PROMPT_VERSION
from profilekit.protocol import eval_users
from profilekit.schemas import profiles_schema
from resources.llm import ProfilerLLMResource
from resources.model_store import LocalModelStore
from resources.protocol import ProtocolResource


@asset(code_version="1", group_name="profiler", automation_condition=on_upstream_data_change())
def profiler_base_weights(profiler_llm: ProfilerLLMResource, model_store: LocalModelStore) -> MaterializeResult:
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


@asset(
    **PARTITIONED,
    code_version="1",
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
    model_store: LocalModelStore,
    protocol: ProtocolResource,
):
    """Zero-shot profiles of the evaluated test users (temperature 0.7), with token counts and seconds; only
    users whose prompt changed since an earlier run are generated again (the nightly refresh relies on it)."""
    users = set(eval_users(filtered_histories, protocol.get()))
    examples = filtered_histories[(filtered_histories["split"] == "test") & filtered_histories["user_id"].isin(users)]
    chat = profiler_llm.chat(model_store)
    cache = GenerationCache(model_store.generation_cache, chat.version)
    profiles, generated_now = generate_profiles(
        chat, examples, items, profiler_llm.history_budget_tokens, profiler_llm.sampling(), cache
    )
    profiles = profiles.assign(
        method="Base", model_version=chat.version, prompt_version=PROMPT_VERSION
    )
    context.log.info(f"{len(profiles)} profiles, {generated_now} generated now, the rest unchanged (cached)")
    yield table_output(
        profiles,
        users=len(profiles),
        generated_now=generated_now,
        mean_profile_tokens=float(profiles["profile_tokens"].mean()),
        seconds_per_user=float(profiles["seconds"].mean()),
        empty_profiles=int((profiles["profile"].str.strip() == "").sum()),
    )
