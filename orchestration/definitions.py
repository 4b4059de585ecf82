"""The one Definitions object of the project (loaded by workspace.yaml and `dagster dev`)."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules

from assets import adaptation, analyses, data, evaluation, profiles, training
from jobs.pipelines import (
    ablation_training_job,
    analyses_job,
    checkpoint_training_job,
    default_graph_job,
    domain_data_job,
    evaluation_job,
    profiler_training_job,
    profiling_job,
    scl_adaptation_job,
    scl_evaluation_job,
    training_inputs_job,
)
from orchestration.resources import environment
from orchestration.schedules import (
    nightly_profile_refresh,
    observe_method_configs,
    observe_raw_files,
    profile_automation,
)

resources, executor = environment()

defs = Definitions(
    assets=load_assets_from_modules([data, profiles, training, evaluation, adaptation, analyses]),
    jobs=[default_graph_job, domain_data_job, evaluation_job, profiler_training_job, profiling_job, scl_adaptation_job,
          scl_evaluation_job, training_inputs_job, checkpoint_training_job, analyses_job, ablation_training_job,
          observe_raw_files, observe_method_configs],
    schedules=[nightly_profile_refresh],
    sensors=[profile_automation],
    resources=resources,
    executor=executor,
)
