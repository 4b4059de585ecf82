"""Method configurations and GRPO-trained profiler checkpoints (METHOD §3-5), partitioned by method x domain."""

from dataclasses import replace

import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    DataVersion,
    DataVersionsByPartition,
    MetadataValue,
    asset,
    observable_source_asset,
)

from assets._common import (
    ARTIFACT,
    LLM_HEAVY,
    ONE_PARTITION_PER_RUN,
    artifact_output,
    frame_version,
    metadata_table,
)
from assets.automation import on_method_config_change
from assets.partitions import from_domain, from_method, method_domain_partitions, method_partitions
from profilekit.methods import METHODS
from profilekit.plots import markdown_image, reward_curve_png
from profilekit.prompts import PROFILE_PROMPTS
from profilekit.protocol import validation_split
from profilekit.training import (
    RewardModels,
    case_study,
    run_key,
    train_profiler,
    training_examples,
    training_reward_trend,
    validation_summary,
)
from profilekit.vectors import load_item_vectors
from resources.artifacts import Artifact
from resources.embedder import EmbedderResource
from resources.llm import JudgeLLMResource, ProfilerLLMResource
from resources.model_store import ModelStore
from resources.protocol import ProtocolResource
from resources.training import TrainingResource


@observable_source_asset(partitions_def=method_partitions, group_name="training")
def method_configs() -> DataVersionsByPartition:
    """Each trained method's reward terms and advantage estimator (profilekit.methods.METHODS); observing a
    changed one re-trains that method's existing checkpoints and nothing else."""
    return DataVersionsByPartition({name: DataVersion(m.fingerprint()) for name, m in METHODS.items()})


@asset(
    partitions_def=method_domain_partitions,
    backfill_policy=ONE_PARTITION_PER_RUN,
    code_version="3",
    group_name="training",
    ins={
        **{name: AssetIn(partition_mapping=from_domain)
           for name in ("filtered_histories", "candidate_sets", "items", "interactions")},
        "item_embeddings": AssetIn(partition_mapping=from_domain),
        "profiler_base_weights": AssetIn(),
    },
    deps=[AssetDep(method_configs, partition_mapping=from_method)],
    op_tags=LLM_HEAVY,
    automation_condition=on_method_config_change(),
    **ARTIFACT,
)
def profiler_checkpoint(
    context: AssetExecutionContext, filtered_histories: pd.DataFrame, candidate_sets: pd.DataFrame, items: pd.DataFrame,
    interactions: pd.DataFrame, item_embeddings: Artifact, profiler_base_weights: Artifact,
    profiler_llm: ProfilerLLMResource, judge_llm: JudgeLLMResource, embedder: EmbedderResource,
    model_store: ModelStore, protocol: ProtocolResource, training: TrainingResource,
):
    """GRPO training of the profiler on the domain's train users with the method's reward; orbax step
    checkpoints, resumed after an interruption; a run that already reached `steps` is not retrained. A zero-shot
    ablation (DUET's "+Self-Prompt") trains nothing: its checkpoint is an empty directory that stands for the base
    weights (version: their content hash; `generated_profiles` loads no checkpoint for step 0)."""
    keys = context.partition_key.keys_by_dimension
    method, domain = METHODS[keys["method"]], keys["domain"]
    if method.zero_shot:
        base = profiler_llm.chat(profiler_base_weights)
        run_dir = model_store.path("profiler_checkpoint", method.name, f"{domain}/zero-shot")
        run_dir.mkdir(parents=True, exist_ok=True)
        return artifact_output(Artifact(run_dir, base.version, {"run": f"{domain}/zero-shot", "step": 0,
                                                                "base_version": base.version}),
                               step=0, trained_now=0, resumed_from=-1, train_examples=0)
    policy, config = profiler_llm.fresh_chat(profiler_base_weights), training.config(method.advantage)
    if method.min_new_tokens is not None:
        config = replace(config, max_new_tokens=max(config.max_new_tokens, method.min_new_tokens))
    train_rows, validation_rows = validation_split(filtered_histories, config.validation_users)

    def examples(rows: pd.DataFrame):
        return training_examples(rows, candidate_sets, items, policy.count_tokens, config.history_budget_tokens,
                                 protocol.recent_k, protocol.seed, PROFILE_PROMPTS[method.prompt], interactions,
                                 holdout_events=method.holdout_events)

    data = examples(train_rows)
    validation = examples(validation_rows) if len(validation_rows) else None
    # The validation curve ranks items with the frozen embedder whatever the method's reward needs.
    emb = embedder.load() if "embedder" in method.needs or validation is not None else None
    vectors = load_item_vectors(item_embeddings.path, emb.version) if emb is not None else None
    judge = judge_llm.chat(profiler_base_weights) if "judge" in method.needs else None
    run = f"{domain}/{run_key(method, config, policy.version, frame_version(filtered_histories).value)}"
    run_dir = model_store.path("profiler_checkpoint", method.name, run)  # fetched when another machine trained it
    # Every step is committed as it is saved, so a run interrupted on one machine resumes on another.
    result = train_profiler(policy, data, method, config, run_dir, RewardModels(emb, vectors, judge),
                            log=context.log.info, on_step=lambda _: model_store.commit(run_dir), validation=validation)
    curve = pd.DataFrame(result.log)
    validation_curve = pd.DataFrame([{k: v for k, v in r.items() if k not in ("case_study", "rewards")}
                                     for r in result.validation])
    checkpoint = Artifact(run_dir, result.digest, {"run": run, "step": result.step, "base_version": policy.version})
    return artifact_output(
        checkpoint,
        step=result.step, trained_now=result.trained_now,
        resumed_from=result.resumed_from if result.resumed_from is not None else -1,
        train_examples=len(data), seconds=round(result.seconds, 1),
        final_reward_mean=float(curve["reward_mean"].iloc[-1]) if len(curve) else float("nan"),
        validation_users=len(validation) if validation is not None else 0,
        **validation_summary(result.validation),
        **training_reward_trend(result.log, config.users_per_step, len(data)),
        reward_curve=MetadataValue.md(markdown_image(
            reward_curve_png(result.log, f"{method.name} on {domain}", result.validation), "training dynamics")),
        log=MetadataValue.md(curve.round(4).to_markdown(index=False)),
        validation_curve=metadata_table(validation_curve),
        case_study=metadata_table(case_study(result.validation)),
    )
