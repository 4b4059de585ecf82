"""Table storage: pandas DataFrames in DuckDB, one schema for the whole graph."""

from __future__ import annotations

from dagster_duckdb_pandas import DuckDBPandasIOManager

from resources.settings import warehouse_path

# A schema named like the database file's stem makes DuckDB report "Ambiguous reference": keep them different.
WAREHOUSE_SCHEMA = "profiles"


def duckdb_warehouse(database: str | None = None) -> DuckDBPandasIOManager:
    return DuckDBPandasIOManager(database=database or warehouse_path(), schema=WAREHOUSE_SCHEMA)
