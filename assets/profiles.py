"""Profiler weights, zero-shot (Base) profiles and the profiles of trained methods."""

from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Failure, asset

from assets._common import ARTIFACT, LLM_HEAVY, ONE_PARTITION_PER_RUN, PARTITIONED, artifact_output, table_output, typed
from assets.automation import on_upstream_data_change
from assets.partitions import from_domain, from_source_checkpoint, method_domain_partitions
from profilekit.checkpoints import load_trained_policy
from profilekit.duet import item_evidence
from profilekit.llm.export import export_gguf_to_hf, packaged_gguf
from profilekit.methods import METHODS
from profilekit.profiler import GenerationCache, generate_profiles, generate_target_profiles
from profilekit.prompts import PROFILE_PROMPTS, PROMPT_VERSION, ProfilePrompt
from profilekit.protocol import eval_examples
from profilekit.schemas import profiles_schema
from profilekit.sources import dir_content_hash
from resources.artifacts import Artifact
from resources.llm import ProfilerLLMResource, packaged_weights_dir
from resources.model_store import ModelStore
from resources.protocol import ProtocolResource


@asset(**ARTIFACT, code_version="2", group_name="profiler", automation_condition=on_upstream_data_change())
def profiler_base_weights(profiler_llm: ProfilerLLMResource, model_store: ModelStore):
    """HF-layout safetensors of the profiler: the packaged SmolLM2 GGUF dequantised once (lossy copy of the
    original weights) into the model store, or the user's own directory; the data version is the directory's
    content hash."""
    if profiler_llm.weights_dir:
        weights = Path(profiler_llm.weights_dir)
    else:
        weights = export_gguf_to_hf(packaged_gguf(model_store.source_cache), packaged_weights_dir(model_store))
    digest = dir_content_hash(weights)
    return artifact_output(Artifact(weights, digest), content_hash=digest, files=len(list(weights.iterdir())))


def _profile_table(context, chat, examples, items, profiler_llm, model_store, method: str, model_version: str,
                   prompt: ProfilePrompt = PROFILE_PROMPTS["profile"], min_new_tokens: int | None = None,
                   target_mode: tuple[pd.DataFrame, pd.DataFrame] | None = None, **metadata):
    """Profiles of `examples` at inference temperature, through the generation cache (only prompts that changed
    since an earlier run reach the model), with the table's metadata. `target_mode` = (examples, interactions)
    adds DUET's target-mode user and item profiles of those examples as two more columns."""
    cache = GenerationCache(model_store.generation_cache, model_version)
    sampling = profiler_llm.sampling(min_new_tokens)
    profiles, generated_now = generate_profiles(
        chat, examples, items, profiler_llm.history_budget_tokens, sampling, cache, f"{method} profiles", prompt,
    )
    target_now, target_seconds = 0, None
    if target_mode is not None:
        rated, interactions = target_mode
        target, target_now = generate_target_profiles(
            chat, rated, items, item_evidence(rated, interactions, items), profiler_llm.history_budget_tokens,
            sampling, cache, prompt,
        )
        target_seconds = float(target.pop("target_seconds").mean()) if len(target) else 0.0
        profiles = profiles.merge(target, on=["domain", "user_id", "cut"], how="left", validate="one_to_one")
    profiles = profiles.assign(method=method, model_version=model_version, prompt_version=PROMPT_VERSION)
    context.log.info(f"{len(profiles)} {method} profiles, {generated_now} generated now, the rest unchanged (cached)")
    return table_output(
        profiles,
        users=len(profiles),
        generated_now=generated_now,
        target_mode_profiles=0 if target_mode is None else len(target_mode[0]),
        target_mode_generated_now=target_now,
        # DUET's per-example item conditioning (DUET_BUMP A6): what each rating question's target-mode profile costs.
        **({} if target_seconds is None else {"target_mode_seconds_per_example": target_seconds}),
        mean_profile_tokens=float(profiles["profile_tokens"].mean()) if len(profiles) else 0.0,
        # The completion's tokens count DUET's scaffold tags and item block too; this is the profile that is read.
        mean_parsed_profile_tokens=(
            float(pd.Series(chat.count_tokens(profiles["profile"].tolist())).mean()) if len(profiles) else 0.0),
        seconds_per_user=float(profiles["seconds"].mean()) if len(profiles) else 0.0,
        empty_profiles=int((profiles["profile"].str.strip() == "").sum()),
        **metadata,
    )


def trained_profiler(checkpoint: Artifact, base: Artifact, profiler_llm: ProfilerLLMResource):
    """The profiler with a trained checkpoint's weights (its version is what its generations are cached under);
    a zero-shot method's checkpoint (step 0) is the base weights themselves."""
    chat = profiler_llm.fresh_chat(base)
    if checkpoint.info["base_version"] != chat.version:
        raise Failure(f"the checkpoint {checkpoint.info['run']} was trained from profiler weights "
                      f"{checkpoint.info['base_version']}, the profiler_llm resource now loads {chat.version}: "
                      "re-materialize profiler_checkpoint")
    if checkpoint.info["step"] == 0:
        return chat
    chat, _ = load_trained_policy(chat, checkpoint.path)
    return chat


@asset(
    **PARTITIONED,
    code_version="2",
    group_name="profiler",
    op_tags=LLM_HEAVY,
    **typed(profiles_schema),
)
def base_profiles(
    context: AssetExecutionContext,
    filtered_histories: pd.DataFrame,
    items: pd.DataFrame,
    profiler_base_weights: Artifact,
    profiler_llm: ProfilerLLMResource,
    model_store: ModelStore,
    protocol: ProtocolResource,
):
    """Zero-shot profiles of the evaluated test users (temperature 0.7), with token counts and seconds; only
    users whose prompt changed since an earlier run are generated again (the nightly refresh relies on it)."""
    chat = profiler_llm.chat(profiler_base_weights)
    examples = eval_examples(filtered_histories, protocol.get())
    yield _profile_table(context, chat, examples, items, profiler_llm, model_store, "Base", chat.version)


@asset(
    partitions_def=method_domain_partitions,
    backfill_policy=ONE_PARTITION_PER_RUN,
    metadata={"partition_expr": {"method": "method", "domain": "domain"}},
    io_manager_key="warehouse",
    automation_condition=on_upstream_data_change(),
    code_version="4",  # 4: DUET's tags written by the sampler (prompts.DUET_SCAFFOLD)
    group_name="training",
    ins={
        **{name: AssetIn(partition_mapping=from_domain) for name in ("filtered_histories", "items", "interactions")},
        "profiler_checkpoint": AssetIn(partition_mapping=from_source_checkpoint),
        "profiler_base_weights": AssetIn(),
    },
    op_tags=LLM_HEAVY,
    **typed(profiles_schema),
)
def generated_profiles(
    context: AssetExecutionContext,
    filtered_histories: pd.DataFrame,
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    profiler_checkpoint: Artifact,
    profiler_base_weights: Artifact,
    profiler_llm: ProfilerLLMResource,
    model_store: ModelStore,
    protocol: ProtocolResource,
):
    """Profiles of a domain's evaluated test users written by a trained method's checkpoint (the one trained on
    the source domain), at inference temperature 0.7; unchanged users come from the generation cache. An
    item-aware prompt (DUET) is asked in its blank mode: no target item, so nothing of the target can leak into
    the profiles that N@10, multiple choice and SCL read. For the QA examples it is also asked in target mode
    (`target_user_profile`, `target_item_profile`), which only DUET's rating-only `10H+P+Pi` context reads."""
    method = context.partition_key.keys_by_dimension["method"]
    chat = trained_profiler(profiler_checkpoint, profiler_base_weights, profiler_llm)
    proto = protocol.get()
    examples = eval_examples(filtered_histories, proto)
    prompt = PROFILE_PROMPTS[METHODS[method].prompt]
    target_mode = (eval_examples(filtered_histories, proto, proto.max_qa_users), interactions) if prompt.item_aware else None
    yield _profile_table(context, chat, examples, items, profiler_llm, model_store, method, profiler_checkpoint.version,
                         prompt, METHODS[method].min_new_tokens, target_mode,
                         checkpoint_step=int(profiler_checkpoint.info.get("step", 0)))
