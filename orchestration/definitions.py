"""The one Definitions object of the project (loaded by workspace.yaml and `dagster dev`)."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules, multiprocess_executor

from assets import data, evaluation, profiles
from jobs.pipelines import default_graph_job
from orchestration.schedules import nightly_profile_refresh, observe_raw_files, profile_automation
from orchestration.resources import local_resources

defs = Definitions(
    assets=load_assets_from_modules([data, profiles, evaluation]),
    jobs=[default_graph_job, observe_raw_files],
    schedules=[nightly_profile_refresh],
    sensors=[profile_automation],
    resources=local_resources(),
    # One DuckDB file and 2 CPU cores: at most two steps at once, and one LLM-heavy step at a time.
    executor=multiprocess_executor.configured(
        {"max_concurrent": 2, "tag_concurrency_limits": [{"key": "profilekit/llm", "value": "heavy", "limit": 1}]}
    ),
)
