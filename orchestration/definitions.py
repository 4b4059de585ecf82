"""The one Definitions object of the project (loaded by workspace.yaml and `dagster dev`)."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules, multiprocess_executor

from assets import data, evaluation, profiles, training
from jobs.pipelines import default_graph_job, domain_data_job, evaluation_job, profiler_training_job, profiling_job
from orchestration.schedules import nightly_profile_refresh, observe_method_configs, observe_raw_files, profile_automation
from orchestration.resources import local_resources

defs = Definitions(
    assets=load_assets_from_modules([data, profiles, training, evaluation]),
    jobs=[default_graph_job, domain_data_job, evaluation_job, profiler_training_job, profiling_job, observe_raw_files,
          observe_method_configs],
    schedules=[nightly_profile_refresh],
    sensors=[profile_automation],
    resources=local_resources(),
    # One DuckDB file and 2 CPU cores: at most two steps at once, and one LLM-heavy step at a time.
    executor=multiprocess_executor.configured(
        {"max_concurrent": 2, "tag_concurrency_limits": [{"key": "profilekit/llm", "value": "heavy", "limit": 1}]}
    ),
)
