"""`make run`: materialize the default graph on real data and print the metric tables.

Per domain: tables, item embeddings and Base profiles; then a short GRPO run of each chosen method on the
source domain, its profiles of every chosen domain, and the metrics and analyses (Table 6, t-SNE, frontier) of
every domain (BLUE next to Base).
Runs are recorded in the Dagster instance at $DAGSTER_HOME, so `dagster dev` shows them afterwards.
"""

import argparse
import sys
import time
import uuid

import duckdb
from dagster import DagsterInstance, ExecuteInProcessResult, MultiPartitionKey

from assets.partitions import source_domain
from jobs.reporting import RunReporter
from orchestration.definitions import defs
from resources.settings import settings, warehouse_path
from resources.training import TrainingResource
from resources.warehouse import WAREHOUSE_SCHEMA

# Dagster's own console log repeats every event in several lines; the reporter's one line per step replaces it
# (warnings and errors still come through, and `--verbose` brings the full log back).
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
VERBOSE_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def assets_by_step() -> dict[str, list[str]]:
    """The asset keys each step materializes (a multi-asset step has several), for the reporter's start lines."""
    return {
        ad.node_def.name: sorted(k.to_user_string() for k in ad.keys)
        for ad in defs.resolve_asset_graph().assets_defs
        if ad.is_executable
    }


def run_job(
    job_name: str,
    partition_key: str | MultiPartitionKey,
    instance: DagsterInstance,
    run_config: dict,
    reporter: RunReporter,
    logs: dict = QUIET_LOGS,
) -> ExecuteInProcessResult:
    """Execute one partition of a job in this process, reporting its steps as they start and end."""
    run_id = str(uuid.uuid4())
    reporter.watch(instance, run_id, f"{job_name} [{partition_key}]")
    started = time.perf_counter()
    result = defs.resolve_job_def(job_name).execute_in_process(
        partition_key=partition_key, instance=instance, raise_on_error=False, run_id=run_id,
        run_config={**logs, **run_config},
    )
    reporter.run_finished(time.perf_counter() - started, result.success)
    return result


def _seconds_since_make_started() -> float | None:
    """`make run` exports the time it started, so the summary can show what setup and imports cost."""
    started = settings().make_started
    return time.time() - started if started else None


def training_run_config(steps: int | None, overrides: list[str]) -> dict:
    """Run config of the training resource from --steps and --training FIELD=VALUE; {} keeps its defaults."""
    config = TrainingResource.overrides(overrides) | ({"steps": steps} if steps is not None else {})
    return {"resources": {"training": {"config": config}}} if config else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    source = source_domain()
    parser.add_argument("--domains", nargs="+", default=[source], help="domain partitions to evaluate")
    parser.add_argument("--methods", nargs="*", default=["blue"], help="methods to train on the source domain")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps per method (default: the resource's)")
    parser.add_argument("--training", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="training resource settings of every method's run (e.g. users_per_step=8), so that "
                             "a run trained by jobs.recipe_sweep with those settings is found, not retrained")
    parser.add_argument("--verbose", action="store_true", help="print Dagster's full event log as well")
    args = parser.parse_args(argv)
    before_runs = _seconds_since_make_started()
    instance = DagsterInstance.get()
    reporter = RunReporter(assets_by_step())
    training = training_run_config(args.steps, args.training)
    plan = [("domain_data", d, {}) for d in dict.fromkeys([source, *args.domains])]
    for method in args.methods:
        plan.append(("profiler_training", MultiPartitionKey({"method": method, "domain": source}), training))
        plan += [("profiling", MultiPartitionKey({"method": method, "domain": d}), {}) for d in args.domains if d != source]
    plan += [(job, d, {}) for d in args.domains for job in ("evaluation", "analyses")]
    logs = VERBOSE_LOGS if args.verbose else QUIET_LOGS
    try:
        for job_name, key, run_config in plan:
            if not run_job(job_name, key, instance, run_config, reporter, logs).success:
                return 1
        with duckdb.connect(warehouse_path(), read_only=True) as con:
            for table in ("rec_metrics", "qa_metrics"):
                rows = con.execute(
                    f"SELECT * FROM {WAREHOUSE_SCHEMA}.{table} WHERE domain IN (SELECT unnest(?)) ORDER BY domain, method, context",
                    [args.domains],
                ).fetchdf()
                print(f"\n{table}\n" + rows.to_markdown(index=False, floatfmt=".4f"))
    finally:
        print("\n" + reporter.summary(before_runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
