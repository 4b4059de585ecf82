"""Table storage: pandas DataFrames in DuckDB, one schema for the whole graph."""

from __future__ import annotations

import duckdb
import pandas as pd
from dagster import ConfigurableResource
from dagster._utils.backoff import backoff
from dagster_duckdb_pandas import DuckDBPandasIOManager

from resources.settings import warehouse_path

# A schema named like the database file's stem makes DuckDB report "Ambiguous reference": keep them different.
WAREHOUSE_SCHEMA = "profiles"


def duckdb_warehouse(database: str | None = None) -> DuckDBPandasIOManager:
    return DuckDBPandasIOManager(database=database or warehouse_path(), schema=WAREHOUSE_SCHEMA)


class WarehouseReader(ConfigurableResource):
    """Reads rows of the warehouse that the IO manager cannot hand over as an input."""

    def domain_rows(self, table: str, domain: str) -> pd.DataFrame:
        raise NotImplementedError


class DuckDBWarehouseReader(WarehouseReader):
    """The DuckDB file of the `local` environment."""

    database: str
    schema_name: str = WAREHOUSE_SCHEMA

    def domain_rows(self, table: str, domain: str) -> pd.DataFrame:
        """Rows of one domain from a table that gathers many partitions (e.g. every method's generated
        profiles); empty when the table does not exist yet (no method trained), where the IO manager would fail
        the run. Connects like the IO manager, retrying while another process holds the file's write lock."""
        con = backoff(
            fn=duckdb.connect, retry_on=(RuntimeError, duckdb.IOException),
            kwargs={"database": self.database, "read_only": False}, max_retries=10,
        )
        try:
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                [self.schema_name, table],
            ).fetchone()[0]
            if not exists:
                return pd.DataFrame()
            return con.execute(f"SELECT * FROM {self.schema_name}.{table} WHERE domain = ?", [domain]).fetchdf()
        finally:
            con.close()


class BigQueryWarehouseReader(WarehouseReader):
    """The same reads against the BigQuery dataset of the `gcp` environment."""

    project: str
    dataset: str = WAREHOUSE_SCHEMA

    def domain_rows(self, table: str, domain: str) -> pd.DataFrame:
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        client = bigquery.Client(project=self.project)
        query = f"SELECT * FROM `{self.project}.{self.dataset}.{table}` WHERE domain = @domain"
        params = [bigquery.ScalarQueryParameter("domain", "STRING", domain)]
        try:
            return client.query(query, job_config=bigquery.QueryJobConfig(query_parameters=params)).to_dataframe()
        except NotFound:
            return pd.DataFrame()
