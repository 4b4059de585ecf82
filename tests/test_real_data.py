"""The default graph end to end on real data with the real models: the packaged MovieLens-100K, the packaged
SmolLM2-135M-Instruct as profiler and judge, the packaged MiniLM as embedder, into a real DuckDB file."""

from pathlib import Path

import pytest
from dagster import DagsterInstance

from orchestration.definitions import defs
from resources.settings import warehouse_path
from resources.warehouse import WAREHOUSE_SCHEMA
from tests.warehouse_query import query, table_rows


def _other_domains_metrics():
    if not Path(warehouse_path()).exists():  # the worker's first run creates the warehouse
        return None
    tables = set(query("SELECT table_name FROM information_schema.tables WHERE table_schema = ?", WAREHOUSE_SCHEMA)["table_name"])
    if "rec_metrics" not in tables:
        return None
    rows = query(f"SELECT * FROM {WAREHOUSE_SCHEMA}.rec_metrics WHERE domain <> ?", "ml-100k")
    return rows.sort_values(list(rows.columns)).reset_index(drop=True)


@pytest.mark.slow
def test_real_ml100k_slice():
    before = _other_domains_metrics()
    with DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def("default_graph").execute_in_process(partition_key="ml-100k", instance=instance).success
    metrics = table_rows("rec_metrics", "ml-100k")
    assert sorted(metrics["context"]) == ["10-H", "10H+P", "All-H", "P"]
    assert (metrics["n_examples"] == 12).all()  # PROFILEKIT_MAX_EVAL_USERS in conftest
    assert ((metrics["recall10"] > 0) & (metrics["recall10"] <= 1)).all()
    counts = query(
        f"SELECT split, count(*) AS n FROM {WAREHOUSE_SCHEMA}.candidate_sets WHERE domain = ? GROUP BY split ORDER BY split",
        "ml-100k",
    )
    n_test = round(0.2 * 943)
    assert counts.set_index("split")["n"].to_dict() == {"test": 100 * n_test, "train": 129 * (943 - n_test)}
    profiles = table_rows("base_profiles", "ml-100k")
    assert len(profiles) == 12 and (profiles["profile_tokens"] > 0).all()
    qa = table_rows("qa_metrics", "ml-100k")
    assert sorted(qa["context"]) == ["10-H", "10H+P", "All-H", "P"] and (qa["n_examples"] == 3).all()
    after = _other_domains_metrics()
    if before is None:
        assert after.empty
    else:
        assert after.equals(before)  # other partitions are untouched by this run
