"""`make run`: materialize the default graph on real data and print the metric tables.

Per domain: tables, item embeddings and Base profiles; then a short GRPO run of each chosen method on the
source domain, its profiles of every chosen domain, and the metrics of every domain (BLUE next to Base).
Runs are recorded in the Dagster instance at $DAGSTER_HOME, so `dagster dev` shows them afterwards.
"""

import argparse
import sys
import time

import duckdb
from dagster import DagsterInstance, MultiPartitionKey

from assets.partitions import source_domain
from orchestration.definitions import defs
from resources.settings import warehouse_path
from resources.warehouse import WAREHOUSE_SCHEMA

INFO_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _run(job_name: str, partition_key, instance, run_config: dict) -> bool:
    started = time.perf_counter()
    result = defs.resolve_job_def(job_name).execute_in_process(
        partition_key=partition_key, instance=instance, raise_on_error=False, run_config={**INFO_LOGS, **run_config}
    )
    state = "succeeded" if result.success else "FAILED"
    print(f"{job_name} [{partition_key}]: run {result.run_id} {state} in {time.perf_counter() - started:.1f} s", flush=True)
    return result.success


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    source = source_domain()
    parser.add_argument("--domains", nargs="+", default=[source], help="domain partitions to evaluate")
    parser.add_argument("--methods", nargs="*", default=["blue"], help="methods to train on the source domain")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps per method (default: the resource's)")
    args = parser.parse_args(argv)
    instance = DagsterInstance.get()
    training = {"resources": {"training": {"config": {"steps": args.steps}}}} if args.steps is not None else {}
    plan = [("domain_data", d, {}) for d in dict.fromkeys([source, *args.domains])]
    for method in args.methods:
        plan.append(("profiler_training", MultiPartitionKey({"method": method, "domain": source}), training))
        plan += [("profiling", MultiPartitionKey({"method": method, "domain": d}), {}) for d in args.domains if d != source]
    plan += [("evaluation", d, {}) for d in args.domains]
    for job_name, key, run_config in plan:
        if not _run(job_name, key, instance, run_config):
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
