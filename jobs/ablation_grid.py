"""Materialize the ablation grid (METHOD §3, §8: Table 6) and print it.

Trains BLUE and each chosen `blue-*` variant on the source domain with one recipe and budget (the `training`
resource's config, the same for every method; `--steps` raises all of them alike, and a finished BLUE run is
continued, not retrained), writes each one's profiles of every chosen domain, then per domain the evaluation
(recommendation and QA) and the analyses (Table 6, t-SNE, frontier). Needs the domains' tables and Base profiles
(`make run` / jobs.default_run).
"""

import argparse
import sys

import duckdb
from dagster import DagsterInstance, MultiPartitionKey

from assets.partitions import source_domain
from jobs.default_run import assets_by_step, run_job, training_run_config
from jobs.reporting import RunReporter
from profilekit.analyses import ABLATION_VARIANTS
from profilekit.metrics import REFERENCE_METHOD
from resources.settings import warehouse_path
from resources.warehouse import WAREHOUSE_SCHEMA

TABLE6 = ["method", "training_steps", "context", "n_examples", "ndcg10", "delta_ndcg10", "ndcg10_t_pvalue", "recall10",
          "delta_recall10", "recall10_t_pvalue", "n_qa", "mc_accuracy", "delta_mc_accuracy", "mc_accuracy_t_pvalue"]


def plan(source: str, domains: list[str], methods: list[str], training: dict) -> list[tuple]:
    """(job, partition, run config) in order: every method's training on the source domain (which writes its
    source-domain profiles), its profiles of the other domains, then each domain's evaluation and analyses."""
    steps = []
    for method in dict.fromkeys([REFERENCE_METHOD, *methods]):
        steps.append(("ablation_training", MultiPartitionKey({"method": method, "domain": source}), training))
        steps += [("profiling", MultiPartitionKey({"method": method, "domain": d}), {}) for d in domains if d != source]
    for domain in domains:
        steps += [("evaluation", domain, {}), ("analyses", domain, {})]
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    source = source_domain()
    parser.add_argument("--domains", nargs="+", default=[source], help="domains to profile and evaluate")
    parser.add_argument("--methods", nargs="+", default=list(ABLATION_VARIANTS), choices=ABLATION_VARIANTS,
                        help="BLUE variants to train beside BLUE")
    parser.add_argument("--steps", type=int, default=None, help="GRPO steps of every method (default: the resource's)")
    parser.add_argument("--training", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="training resource settings shared by every method (e.g. users_per_step=8)")
    args = parser.parse_args(argv)
    instance = DagsterInstance.get()
    training = training_run_config(args.steps, args.training)
    reporter = RunReporter(assets_by_step())
    try:
        for job_name, key, run_config in plan(source, args.domains, args.methods, training):
            if not run_job(job_name, key, instance, run_config, reporter).success:
                return 1
        with duckdb.connect(warehouse_path(), read_only=True) as con:
            for domain in args.domains:
                rows = con.execute(
                    f"SELECT {', '.join(TABLE6)} FROM {WAREHOUSE_SCHEMA}.ablation_metrics WHERE domain = ? "
                    # Rows written before the column existed have no reference; they are all BLUE's family.
                    "AND coalesce(reference, ?) = ? ORDER BY method = ? DESC, method, context DESC",
                    [domain, REFERENCE_METHOD, REFERENCE_METHOD, REFERENCE_METHOD],
                ).fetchdf()
                print(f"\nablation_metrics {domain}\n" + rows.to_markdown(index=False, floatfmt=".4f"))
    finally:
        print("\n" + reporter.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
