"""Sweep GRPO recipes on the source domain and rank them by the validation curve.

Every point of the grid (the cartesian product of `--grid name=v1,v2 ...` over the training resource's fields)
trains the method's checkpoint for `--steps` steps as a run of its own (resumable; raising --steps later continues
it), scoring the held-out validation users before the first step, every --validate-every steps and after the last.
Recipes are ranked by validation-reward gain per CPU hour; the table is printed and written to --out.

    python -m jobs.recipe_sweep --method blue --steps 12 --grid learning_rate=1e-5,1e-4 rollouts=4,8
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance, MultiPartitionKey

from assets.partitions import source_domain
from jobs.default_run import assets_by_step, run_job
from jobs.reporting import RunReporter
from resources.training import TrainingResource

SUMMARY = ("step", "seconds", "validation_users", "validation_reward_first", "validation_reward_last",
           "validation_reward_spread", "validation_reward_gain", "validation_reward_gain_se", "validation_ndcg10_P_first",
           "validation_ndcg10_P_last", "validation_ndcg10_10HP_first", "validation_ndcg10_10HP_last")


def parse_grid(specs: list[str]) -> list[dict]:
    """`["learning_rate=1e-5,1e-4", "rollouts=4,8"]` -> every combination, values typed like the resource's fields."""
    axes = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        axes[name] = [TrainingResource.field_value(name, v) for v in values.split(",")]
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())] or [{}]


def rank_recipes(rows: list[dict]) -> pd.DataFrame:
    """Validation-reward gain per CPU hour of training (validation included), best first."""
    table = pd.DataFrame(rows)
    table["gain_per_cpu_hour"] = table["validation_reward_gain"] / (table["seconds"] / 3600.0)
    table["gain_over_spread"] = table["validation_reward_gain"] / table["validation_reward_spread"]
    if "validation_reward_gain_se" in table:
        table["gain_over_se"] = table["validation_reward_gain"] / table["validation_reward_gain_se"]
    return table.sort_values("gain_per_cpu_hour", ascending=False).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="blue")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--validate-every", type=int, default=None)
    parser.add_argument("--grid", nargs="*", default=[], help="FIELD=V1,V2 of the training resource")
    parser.add_argument("--out", type=Path, default=None, help="write the ranked table here (markdown)")
    args = parser.parse_args(argv)
    domain, instance = source_domain(), DagsterInstance.get()
    reporter = RunReporter(assets_by_step())
    if not run_job("training_inputs", domain, instance, {}, reporter).success:
        return 1
    fixed = {"steps": args.steps} | ({"validate_every": args.validate_every} if args.validate_every else {})
    rows = []
    for recipe in parse_grid(args.grid):
        config = {"resources": {"training": {"config": fixed | recipe}}}
        result = run_job("checkpoint_training", MultiPartitionKey({"method": args.method, "domain": domain}),
                         instance, config, reporter)
        if not result.success:
            return 1
        metadata = result.asset_materializations_for_node("profiler_checkpoint")[-1].metadata
        rows.append(recipe | {k: metadata[k].value for k in SUMMARY if k in metadata})
        table = rank_recipes(rows)
        print(table.to_markdown(index=False, floatfmt=".4g"), flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n")
    print("\n" + reporter.summary(None), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
