"""The data assets under faulty input: a domain whose new files leave no eligible user is emptied, not left
with the old users' rows; a broken registry entry fails its own partition with the registry's message."""

import json

import pytest
import yaml
from dagster import AssetSelection, DagsterInstance, load_assets_from_modules, materialize

from assets import data
from orchestration.resources import local_resources
from resources.settings import settings
from tests.conftest import SHRINKING_AMAZON, TEST_DATA
from tests.native_files import write_amazon_domain
from tests.warehouse_query import table_rows

DATA_ASSETS = load_assets_from_modules([data])
TABLES = AssetSelection.groups("data") - AssetSelection.assets("raw_domain_files")


def _materialize(domain: str):
    return materialize(DATA_ASSETS, partition_key=domain, resources=local_resources(),
                       instance=DagsterInstance.ephemeral(), selection=TABLES, raise_on_error=False)


def _rows(table: str, domain: str) -> int:
    return len(table_rows(table, domain))


def _checks(result) -> dict[str, object]:
    return {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}


def test_files_that_filter_to_nothing_empty_the_histories_and_candidates():
    domain = "shrinking-fixture"
    first = _materialize(domain)
    assert first.success
    assert _rows("filtered_histories", domain) > 0 and _rows("candidate_sets", domain) > 0

    write_amazon_domain(SHRINKING_AMAZON, n_users=12, events_per_user=7, seed=4, gz=False)  # every user < 20 events
    second = _materialize(domain)
    assert _rows("interactions", domain) == 12 * 7
    assert _rows("filtered_histories", domain) == 0
    assert _rows("candidate_sets", domain) == 0
    checks = _checks(second)
    assert not checks["eligible_users"].passed
    description = checks["eligible_users"].metadata["description"].value
    assert "12 users read, 12 with fewer (the most any user has: 7)" in description
    assert not checks["candidates_valid"].passed
    assert not second.success  # the blocking check stops the run before anything downstream reads the domain


def test_a_split_with_one_side_empty_warns(tmp_path):
    domain = "shrinking-fixture"
    write_amazon_domain(SHRINKING_AMAZON, n_users=2, events_per_user=25, seed=5, gz=False)
    result = _materialize(domain)
    check = _checks(result)["both_splits"]
    assert not check.passed and check.severity.value == "WARN"
    assert "0 test users, 2 train users" == check.metadata["description"].value


def test_a_broken_registry_entry_fails_its_partition_with_the_registry_message(monkeypatch):
    registry = yaml.safe_load((TEST_DATA / "domains.yaml").read_text())
    registry["domains"]["shrinking-fixture"] = {"format": "amazon2023", "path": None}
    path = TEST_DATA / "broken-registry.yaml"
    path.write_text(yaml.safe_dump(registry))
    monkeypatch.setenv("PROFILEKIT_DOMAINS", str(path))
    settings.cache_clear()  # the settings are read once per process: read them again with the broken registry
    try:
        result = _materialize("shrinking-fixture")
    finally:
        monkeypatch.undo()
        settings.cache_clear()
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = json.dumps(failure.event_specific_data.error.to_string() if failure.event_specific_data.error else "")
    assert "broken-registry.yaml" in message and "domain 'shrinking-fixture' has 'path: '" in message
    assert _materialize("amazon-fixture").success  # the other domains still materialize


@pytest.fixture(autouse=True, scope="module")
def _restore_shrinking_domain():
    yield
    write_amazon_domain(SHRINKING_AMAZON, seed=3, gz=False)
