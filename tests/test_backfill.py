"""A backfill launched as a user launches it: `dagster-daemon` and `dagster-webserver` running on a fresh instance,
the backfill of the `domain_data` job over two fixture domains submitted through the webserver's GraphQL API (the
mutation the UI's "Launch backfill" sends), the daemon's backfill loop turning it into one run per partition and
its run queue launching them; both partitions end up materialized, each by its own successful run."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG

from orchestration.definitions import defs
from tests.conftest import ROOT
from tests.test_ui import _free_port
from tests.tiny_llm import tiny_run_resources

pytestmark = pytest.mark.slow

JOB = "domain_data"
DOMAINS = ["amazon-fixture", "refresh-fixture"]
# With every step in its run's process, the two runs took 9 s and 11 s (beside a training run) and the whole test
# 90 s in a full suite (2026-12-06); most of the rest is the backfill daemon's 30-second loop. The limit leaves room
# for a busy machine: with a process per step the same backfill took 392 s, and over 600 s beside two other test
# sessions.
BACKFILL_SECONDS = 900
# One run at a time on these 2-core machines (the daemon's run queue holds the second one back), and no asset
# daemon: the project's automation sensor is on by default and would queue evaluation runs of the backfilled
# domains that compete for the run slot and may outlive the daemon, writing into the test warehouse.
DAGSTER_YAML = """telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 1
auto_materialize:
  enabled: false
  use_sensors: false
"""

LOCATIONS = """
query { workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RELOAD = """
mutation Reload($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename } }"""
PARTITION_SETS = """
query { repositoriesOrError { ... on RepositoryConnection { nodes {
  name location { name } partitionSets { name pipelineName } } } ... on Error { message } } }"""
LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename ... on PartitionBackfill { status partitionNames } ... on Error { message } } }"""


def _graphql(url: str, query: str, **variables) -> dict:
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.load(response)
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """Daemon and webserver on a temporary DAGSTER_HOME; the project's own modules come first on the path of every
    process they start (code server, run workers, step workers)."""
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    # Create the instance's SQLite storages here, once: the daemon, the webserver and its code server would otherwise
    # all create and stamp them at once, and the loser of that race dies on an alembic CommandError (seen in CI).
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))):
        pass
    env = {**os.environ, "DAGSTER_HOME": str(home),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    bin_dir = Path(sys.executable).parent
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    commands = {
        "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        "webserver": [str(bin_dir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
    }
    procs, logs = {}, {}
    try:
        for name, cmd in commands.items():
            logs[name] = open(home / f"{name}.log", "w")
            procs[name] = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=logs[name], stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("dagster-webserver did not answer within 180 s")
                time.sleep(1)
        yield url, home
    finally:
        for proc in procs.values():
            _stop_group(proc)
        for log in logs.values():
            log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a service and everything it started: the code servers and the runs they launched live in its process
    group and outlive it otherwise (a run still going at a timeout would keep writing into the test warehouse)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers: code servers wait for their runs, runs ignore SIGTERM
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _reload_failed_locations(url: str) -> None:
    """What a user does on the UI's "Reload" button when a code location failed to load: a code server that lost its
    heartbeat on a busy machine is started again instead of leaving the workspace empty."""
    entries = _graphql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
    for entry in entries:
        if entry["loadStatus"] == "LOADED" and (entry["locationOrLoadError"] or {}).get("__typename") == "PythonError":
            _graphql(url, RELOAD, name=entry["name"])


def _log_tail(home: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(home.glob("*.log")))


@pytest.mark.timeout(BACKFILL_SECONDS + 300)
def test_daemon_runs_a_graphql_backfill_of_two_domains_as_one_run_per_partition(services, tiny_chat_dir):
    url, home = services
    # The webserver answers before its code server has loaded the definitions: wait for the job's partition set.
    deadline = time.monotonic() + 180
    while True:
        repos = _graphql(url, PARTITION_SETS)["repositoriesOrError"]
        assert "nodes" in repos, repos
        found = [(r, p) for r in repos["nodes"] for p in r["partitionSets"] if p["pipelineName"] == JOB]
        if found:
            break
        assert time.monotonic() < deadline, f"no partition set of {JOB} after 180 s\n{_log_tail(home)}"
        _reload_failed_locations(url)
        time.sleep(1)
    [(repo, partition_set)] = found
    # The launchpad's config of the backfill: the tiny models and every step in the run's own process, so each
    # run takes seconds, not minutes (the default executor starts a process, which imports the project, per step).
    run_config = {"resources": tiny_run_resources(tiny_chat_dir), "execution": {"config": {"in_process": {}}}}
    params = {
        "selector": {
            "partitionSetName": partition_set["name"],
            "repositorySelector": {"repositoryName": repo["name"], "repositoryLocationName": repo["location"]["name"]},
        },
        "partitionNames": DOMAINS,
        "runConfigData": run_config,
    }
    launched = _graphql(url, LAUNCH, params=params)["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]
    launched_at = time.monotonic()

    deadline = launched_at + BACKFILL_SECONDS
    while True:
        backfill = _graphql(url, STATUS, id=backfill_id)["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            break
        assert time.monotonic() < deadline, f"backfill still {backfill['status']}\n{_log_tail(home)}"
        time.sleep(5)
    assert backfill["status"] == "COMPLETED_SUCCESS", _log_tail(home)
    print(f"backfill of {len(DOMAINS)} partitions finished in {time.monotonic() - launched_at:.0f} s")
    assert sorted(backfill["partitionNames"]) == sorted(DOMAINS)

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        runs = instance.get_runs(filters=RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
        for record in instance.get_run_records(filters=RunsFilter(tags={BACKFILL_ID_TAG: backfill_id})):
            print(f"  run {record.dagster_run.tags[PARTITION_NAME_TAG]}: {record.end_time - record.start_time:.0f} s")
        assert sorted(r.tags[PARTITION_NAME_TAG] for r in runs) == sorted(DOMAINS)  # one run per partition
        assert len(instance.get_runs()) == len(runs)  # and nothing else was launched
        assert all(r.status == DagsterRunStatus.SUCCESS and r.job_name == JOB for r in runs)
        job_assets = defs.resolve_job_def(JOB).asset_layer.executable_asset_keys
        partitioned = {k for k in job_assets if defs.resolve_asset_graph().get(k).partitions_def is not None}
        for run in runs:
            events = instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
            materialized = {(e.asset_materialization.asset_key, e.asset_materialization.partition) for e in events}
            domain = run.tags[PARTITION_NAME_TAG]
            assert {(k, domain) for k in partitioned} <= materialized  # this run wrote its own domain ...
            assert {p for k, p in materialized if k in partitioned} == {domain}  # ... and only that one
        for key in partitioned:
            assert set(DOMAINS) <= instance.get_materialized_partitions(key)
