"""Glue shared by the asset modules: content-hash data versions and table metadata."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    BackfillPolicy,
    DataVersion,
    MetadataValue,
    Output,
    TableColumn,
    TableRecord,
    TableSchema,
)
from dagster_pandera import pandera_schema_to_dagster_type

from assets.automation import on_upstream_data_change
from assets.partitions import domain_partitions
from resources.artifacts import Artifact

# Every table is a domain-partitioned DuckDB table, rebuilt only when an upstream data version changes.
TABLE_OUT = {
    "metadata": {"partition_expr": "domain"},
    "automation_condition": on_upstream_data_change(),
    "io_manager_key": "warehouse",
}
# A backfill of "all domains" (or a chosen set, or method x domain) from the UI becomes one run per partition:
# independent, retried alone, and throttled by the executor's and run queue's limits.
ONE_PARTITION_PER_RUN = BackfillPolicy.multi_run(max_partitions_per_run=1)
PARTITIONED = {**TABLE_OUT, "partitions_def": domain_partitions, "backfill_policy": ONE_PARTITION_PER_RUN}
# Steps that run the profiler or judge LLM: locally the executor runs at most one of them at a time; on k8s
# (the gcp environment) each gets a pod on a TPU slice node.
TPU_POD = {
    "container_config": {"resources": {"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"google.com/tpu": "4"}}},
    "pod_spec_config": {
        "node_selector": {
            "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
            "cloud.google.com/gke-tpu-topology": "2x2",
        }
    },
}
LLM_HEAVY = {"profilekit/llm": "heavy", "dagster-k8s/config": TPU_POD}


# Checkpoints, weights, embedders and vectors: written by the model store, handed on as `Artifact`s.
ARTIFACT = {"io_manager_key": "artifacts"}


def artifact_output(artifact: Artifact, **metadata) -> Output:
    """An artifact with its content version as the data version."""
    return Output(artifact, data_version=DataVersion(artifact.version), metadata=metadata)


_DAGSTER_TYPES: dict[str, object] = {}


def typed(schema) -> dict:
    """The pandera schema as a Dagster type, made once per schema: assets sharing a schema (Base and trained
    profiles) must share the type, since Dagster type names are unique."""
    if schema.name not in _DAGSTER_TYPES:
        _DAGSTER_TYPES[schema.name] = pandera_schema_to_dagster_type(schema)
    return {"dagster_type": _DAGSTER_TYPES[schema.name]}


# Wall-time measurements differ on every run; they must not make an identical result look new.
VOLATILE_COLUMNS = ("seconds", "embedding_seconds", "seconds_per_user")


def frame_version(df: pd.DataFrame) -> DataVersion:
    """Content hash of a table (values and column names), independent of the run that produced it."""
    df = df.drop(columns=[c for c in VOLATILE_COLUMNS if c in df.columns])
    digest = hashlib.sha256(",".join(map(str, df.columns)).encode())
    digest.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return DataVersion(digest.hexdigest()[:24])


def table_output(df: pd.DataFrame, output_name: str = "result", **metadata) -> Output:
    preview = df.head(10).to_markdown(index=False)
    return Output(
        df,
        output_name=output_name,
        data_version=frame_version(df),
        metadata={"rows": len(df), "preview": MetadataValue.md(preview), **metadata},
    )


def _column_type(dtype) -> str:
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    return "string"


def _cell(value, digits: int):
    """A JSON-safe cell: the UI parses each record as JSON, where NaN is not a value (an empty cell instead)."""
    if value is None or value is pd.NA or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return None
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer | int):
        return int(value)
    if isinstance(value, np.floating | float):
        return round(float(value), digits)
    return str(value)


def metadata_table(df: pd.DataFrame, digits: int = 4) -> MetadataValue:
    """A table the Dagster UI renders inline (typed columns, floats rounded to `digits`)."""
    schema = TableSchema(columns=[TableColumn(name=str(c), type=_column_type(df[c].dtype)) for c in df.columns])
    records = [TableRecord(data={str(c): _cell(v, digits) for c, v in zip(df.columns, row)})
               for row in df.itertuples(index=False, name=None)]
    return MetadataValue.table(records=records, schema=schema)


def check_result(
    name: str, asset: str, violations: int, description: str, severity: AssetCheckSeverity = AssetCheckSeverity.ERROR
) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=name,
        asset_key=asset,
        passed=violations == 0,
        severity=severity,
        metadata={"violations": violations, "description": description},
    )
