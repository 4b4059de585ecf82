"""`make run`: materialize the default graph for the chosen domains and print the metric table.

Runs are recorded in the Dagster instance at $DAGSTER_HOME, so `dagster dev` shows them afterwards.
"""

import argparse
import sys
import time

import duckdb
from dagster import DagsterInstance

from orchestration.definitions import defs
from resources.settings import warehouse_path
from resources.warehouse import WAREHOUSE_SCHEMA

INFO_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", nargs="+", default=["ml-1m"], help="domain partitions to materialize")
    args = parser.parse_args(argv)
    job = defs.resolve_job_def("default_graph")
    instance = DagsterInstance.get()
    for domain in args.domains:
        started = time.perf_counter()
        result = job.execute_in_process(
            partition_key=domain, instance=instance, raise_on_error=False, run_config=INFO_LOGS
        )
        print(f"{domain}: run {result.run_id} {'succeeded' if result.success else 'FAILED'} in {time.perf_counter() - started:.1f} s")
        if not result.success:
            return 1
    with duckdb.connect(warehouse_path(), read_only=True) as con:
        for table in ("rec_metrics", "qa_metrics"):
            rows = con.execute(
                f"SELECT * FROM {WAREHOUSE_SCHEMA}.{table} WHERE domain IN (SELECT unnest(?)) ORDER BY domain, method, context",
                [args.domains],
            ).fetchdf()
            print(f"\n{table}\n" + rows.to_markdown(index=False, floatfmt=".4f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
