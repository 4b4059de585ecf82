"""The one Definitions object of the project (loaded by workspace.yaml and `dagster dev`)."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules

from assets import data, evaluation, profiles
from jobs.pipelines import default_graph_job
from orchestration.resources import local_resources

defs = Definitions(
    assets=load_assets_from_modules([data, profiles, evaluation]),
    jobs=[default_graph_job],
    resources=local_resources(),
)
