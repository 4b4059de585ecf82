"""Table storage: pandas DataFrames in DuckDB, one schema for the whole graph."""

from __future__ import annotations

import duckdb
import pandas as pd
from dagster import ConfigurableResource
from dagster._core.definitions.metadata import TableMetadataSet
from dagster._core.storage.db_io_manager import DbIOManager
from dagster._utils.backoff import backoff
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler

from resources.settings import warehouse_path

# A schema named like the database file's stem makes DuckDB report "Ambiguous reference": keep them different.
WAREHOUSE_SCHEMA = "profiles"


def _table_exists(connection, schema: str, table: str) -> bool:
    return bool(
        connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?", [schema, table]
        ).fetchone()[0]
    )


class _TransactionalClient(DuckDbClient):
    """Deletes a partition's old rows inside a transaction that `_ColumnEvolvingHandler` commits after inserting
    the new ones: a writer killed in between leaves the old rows (the stock client's DELETE commits on its own,
    so a crash left the partition empty while its last materialization still counted its rows)."""

    @staticmethod
    def delete_table_slice(context, table_slice, connection) -> None:
        connection.begin()
        # A failed statement would abort the transaction: look the table up instead of catching its absence.
        if _table_exists(connection, table_slice.schema, table_slice.table):
            DuckDbClient.delete_table_slice(context, table_slice, connection)


class _ColumnEvolvingHandler(DuckDBPandasTypeHandler):
    """Writes a partition even when a newer code version added columns to the table: the new columns are added
    (older partitions read NULL there) and rows are inserted by column name. The stock handler inserts by
    position and fails on the first partition written after such an upgrade. Commits the transaction that
    `_TransactionalClient` opened."""

    def handle_output(self, context, table_slice, obj: pd.DataFrame, connection):
        table = f"{table_slice.schema}.{table_slice.table}"
        if not _table_exists(connection, table_slice.schema, table_slice.table) or obj.empty:
            metadata = super().handle_output(context, table_slice, obj, connection)
            connection.commit()
            return metadata
        have = {row[0] for row in connection.execute(f"DESCRIBE {table}").fetchall()}
        types = {row[0]: row[1] for row in connection.execute("DESCRIBE SELECT * FROM obj").fetchall()}
        for column in obj.columns:
            if column not in have:
                connection.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" {types[column]}')
        connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM obj")
        connection.commit()
        rows = {"partition_row_count" if context.has_partition_key else "row_count": obj.shape[0]}
        context.add_output_metadata({**TableMetadataSet(storage_kind="duckdb", **rows)})


class ProfilesDuckDBIOManager(DuckDBPandasIOManager):
    """dagster-duckdb-pandas with atomic partition rewrites and column-evolving writes (see above)."""

    @staticmethod
    def type_handlers():
        return [_ColumnEvolvingHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return DbIOManager(
            db_client=_TransactionalClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="DuckDBIOManager",
        )


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
