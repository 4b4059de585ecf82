"""A process that writes one partition of a DuckDB table through the project's IO manager, optionally pausing
between the DELETE of the partition's old rows and the INSERT of its new ones (so a test can kill it there).

    python -m tests.processes.partition_writer DATABASE DOMAIN ROWS [--pause-before-insert MARKER_FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from dagster import StaticPartitionsDefinition, asset, materialize

from resources import warehouse
from resources.warehouse import ProfilesDuckDBIOManager

DOMAINS = StaticPartitionsDefinition(["a", "b"])


@asset(
    partitions_def=DOMAINS, metadata={"partition_expr": "domain"}, io_manager_key="warehouse", config_schema={"rows": int}
)
def events(context) -> pd.DataFrame:
    rows = int(context.op_config["rows"])
    return pd.DataFrame({"domain": context.partition_key, "value": range(rows)})


def _pause_before_insert(marker: Path) -> None:
    """Hold the writer after the IO manager deleted the old rows and before it inserts the new ones."""
    handle_output = warehouse._ColumnEvolvingHandler.handle_output

    def paused(self, context, table_slice, obj, connection):
        marker.touch()
        time.sleep(120)
        return handle_output(self, context, table_slice, obj, connection)

    warehouse._ColumnEvolvingHandler.handle_output = paused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("domain")
    parser.add_argument("rows", type=int)
    parser.add_argument("--pause-before-insert", type=Path)
    args = parser.parse_args(argv)
    if args.pause_before_insert:
        _pause_before_insert(args.pause_before_insert)
    result = materialize(
        [events],
        partition_key=args.domain,
        resources={"warehouse": ProfilesDuckDBIOManager(database=args.database, schema="profiles")},
        run_config={"ops": {"events": {"config": {"rows": args.rows}}}},
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
