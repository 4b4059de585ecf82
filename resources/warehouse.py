"""Table storage: pandas DataFrames in DuckDB, one schema for the whole graph."""

from __future__ import annotations

import duckdb
import pandas as pd
from dagster import ConfigurableResource
from dagster._core.definitions.metadata import TableMetadataSet
from dagster._utils.backoff import backoff
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler

from resources.settings import warehouse_path

# A schema named like the database file's stem makes DuckDB report "Ambiguous reference": keep them different.
WAREHOUSE_SCHEMA = "profiles"


class _ColumnEvolvingHandler(DuckDBPandasTypeHandler):
    """Writes a partition even when a newer code version added columns to the table: the new columns are added
    (older partitions read NULL there) and rows are inserted by column name. The stock handler inserts by
    position and fails on the first partition written after such an upgrade."""

    def handle_output(self, context, table_slice, obj: pd.DataFrame, connection):
        table = f"{table_slice.schema}.{table_slice.table}"
        exists = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [table_slice.schema, table_slice.table],
        ).fetchone()[0]
        if not exists or obj.empty:
            return super().handle_output(context, table_slice, obj, connection)
        have = {row[0] for row in connection.execute(f"DESCRIBE {table}").fetchall()}
        types = {row[0]: row[1] for row in connection.execute("DESCRIBE SELECT * FROM obj").fetchall()}
        for column in obj.columns:
            if column not in have:
                connection.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {types[column]}')
        connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM obj")
        rows = {"partition_row_count" if context.has_partition_key else "row_count": obj.shape[0]}
        context.add_output_metadata({**TableMetadataSet(storage_kind="duckdb", **rows)})


class ProfilesDuckDBIOManager(DuckDBPandasIOManager):
    """dagster-duckdb-pandas with column-evolving writes (see `_ColumnEvolvingHandler`)."""

    @staticmethod
    def type_handlers():
        return [_ColumnEvolvingHandler()]


def duckdb_warehouse(database: str | None = None) -> DuckDBPandasIOManager:
    return ProfilesDuckDBIOManager(database=database or warehouse_path(), schema=WAREHOUSE_SCHEMA)


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
