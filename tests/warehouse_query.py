"""Read-only SQL on the test warehouse, for assertions on what the assets wrote."""

import duckdb
import pandas as pd

from resources.settings import warehouse_path
from resources.warehouse import DuckDBWarehouseReader


def query(sql: str, *params: object) -> pd.DataFrame:
    with duckdb.connect(warehouse_path(), read_only=True) as con:
        return con.execute(sql, list(params)).fetchdf()


def table_rows(table: str, domain: str) -> pd.DataFrame:
    """Every row a table of the warehouse holds for one domain, read as the assets read them."""
    return DuckDBWarehouseReader(database=str(warehouse_path())).domain_rows(table, domain)
