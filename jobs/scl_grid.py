"""Materialize the SCL grid (METHOD §6, §8: Tables 3 and 5) and print its tables.

For every context method: adapt the embedder on the source domain, then on each other chosen domain (in-domain),
scoring each domain's test users with both; then the metric tables of every chosen domain. Needs the domains'
tables and the profiles of the chosen methods (`make run` / jobs.default_run), and for a trained method its
checkpoint on the source domain.
"""

import argparse
import sys

import duckdb
import pandas as pd
from dagster import DagsterInstance, MultiPartitionKey

from assets.partitions import SCL_METHODS, source_domain
from jobs.default_run import assets_by_step, run_job
from jobs.reporting import RunReporter
from profilekit.metrics import paired_significance
from resources.settings import warehouse_path
from resources.warehouse import WAREHOUSE_SCHEMA


def scl_against_frozen(scl: pd.DataFrame, frozen: pd.DataFrame) -> pd.DataFrame:
    """N@10 of each SCL (setting, domain, context) next to the frozen embedder's on the same users, paired-tested."""
    rows = []
    for (setting, domain, method, context), scores in scl.groupby(["setting", "domain", "method", "context"]):
        same = frozen[(frozen["domain"] == domain) & (frozen["method"] == method) & (frozen["context"] == context)]
        paired = scores.merge(same, on=["domain", "user_id", "cut"], suffixes=("_scl", "_frozen"))
        test = paired_significance(paired["ndcg10_scl"].to_numpy(), paired["ndcg10_frozen"].to_numpy())
        rows.append({"setting": setting, "domain": domain, "method": method, "context": context, "n": len(paired),
                     "ndcg10_frozen": paired["ndcg10_frozen"].mean(), "ndcg10_scl": paired["ndcg10_scl"].mean(),
                     "t_pvalue": test["t_pvalue"], "wilcoxon_pvalue": test["wilcoxon_pvalue"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    source = source_domain()
    parser.add_argument("--domains", nargs="+", default=[source], help="domains to adapt on and evaluate")
    parser.add_argument("--methods", nargs="+", default=["history", "Base", "blue"], choices=SCL_METHODS,
                        help="user-context methods (history = 10-H alone)")
    args = parser.parse_args(argv)
    instance = DagsterInstance.get()
    domains = list(dict.fromkeys([source, *args.domains]))  # the source domain's embedders first
    plan = [("scl_adaptation", MultiPartitionKey({"method": m, "domain": d}), {}) for d in domains for m in args.methods]
    plan += [("scl_evaluation", d, {}) for d in args.domains]
    reporter = RunReporter(assets_by_step())
    try:
        for job_name, key, run_config in plan:
            if not run_job(job_name, key, instance, run_config, reporter).success:
                return 1
        with duckdb.connect(warehouse_path(), read_only=True) as con:
            rows = con.execute(
                f"SELECT setting, domain, method, context, n_examples, ndcg10, recall10, n_paired, mean_diff_vs_ref, "
                f"t_pvalue_vs_ref, wilcoxon_pvalue_vs_ref, n_paired_vs_base, mean_diff_vs_base, t_pvalue_vs_base, "
                f"wilcoxon_pvalue_vs_base FROM {WAREHOUSE_SCHEMA}.scl_metrics WHERE domain IN (SELECT unnest(?)) "
                f"ORDER BY setting, domain, method",
                [args.domains],
            ).fetchdf()
            query = f"SELECT * FROM {WAREHOUSE_SCHEMA}.{{}} WHERE domain IN (SELECT unnest(?))"
            scl = con.execute(query.format("scl_example_scores"), [args.domains]).fetchdf()
            frozen = con.execute(query.format("rec_example_scores"), [args.domains]).fetchdf()
        print("\nscl_metrics\n" + rows.to_markdown(index=False, floatfmt=".4f"))
        print("\nSCL against the frozen embedder\n" + scl_against_frozen(scl, frozen).to_markdown(index=False, floatfmt=".4f"))
    finally:
        print("\n" + reporter.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
