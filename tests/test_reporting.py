"""What `make run` prints: one line per asset step as it starts and as it ends with its key figures, a progress
bar for profile generation (stderr, when asked for), and the wall-time summary."""

import re

from dagster import AssetKey, DagsterInstance, IntMetadataValue, MetadataValue, TextMetadataValue

from jobs.default_run import assets_by_step, run_job
from jobs.reporting import MAX_FIGURES, RunReporter, key_figures
from orchestration.definitions import defs
from profilekit import progress
from tests.tiny_llm import tiny_run_resources

DOMAIN = "amazon-fixture"


def _tiny(tiny_chat_dir) -> dict:
    return {"resources": tiny_run_resources(tiny_chat_dir, seed=424242, judge=False)}


def test_key_figures_prefer_known_counts_and_append_the_headline():
    metadata = {
        "preview": MetadataValue.md("| a |"), "rows": IntMetadataValue(12), "final_loss": MetadataValue.float(0.123456),
        "users": IntMetadataValue(3), "headline": TextMetadataValue("N@10: Base/P 0.250"),
    }
    assert key_figures(metadata) == "rows 12, users 3, final_loss 0.1235, N@10: Base/P 0.250"
    many = {name: IntMetadataValue(i) for i, name in enumerate(("rows", "users", "items", "pairs", "steps", "step"))}
    assert key_figures(many).count(",") == MAX_FIGURES - 1
    assert key_figures({"path": MetadataValue.path("/x")}) == ""


def test_domain_data_run_prints_each_step_with_its_figures_a_profile_bar_and_the_time_summary(
    tiny_chat_dir, capsys, monkeypatch
):
    monkeypatch.setattr(progress, "_FORCED", True)  # pytest's stderr is no terminal: bars are off unless forced
    steps = assets_by_step()
    reporter = RunReporter(steps)
    with DagsterInstance.ephemeral() as instance:
        assert run_job("domain_data", DOMAIN, instance, _tiny(tiny_chat_dir), reporter).success
        job_assets = {k.to_user_string() for k in defs.resolve_job_def("domain_data").asset_layer.executable_asset_keys}
        metadata = {}
        for name in job_assets:
            partition = None if name == "profiler_base_weights" else DOMAIN
            event = instance.get_latest_materialization_event(AssetKey(name))
            assert event.asset_materialization.partition == partition
            metadata[name] = event.asset_materialization.metadata
    out, err = capsys.readouterr()
    lines = out.splitlines()

    for step, assets in steps.items():
        if not set(assets) & job_assets:
            continue
        name = ", ".join(assets)
        assert any(line.endswith(f"  start  {name}") for line in lines), (name, out)
        done = [line for line in lines if f"  done   {name} in " in line]
        assert len(done) == 1, (name, out)
        for asset in assets:
            assert f"{asset}: {key_figures(metadata[asset]) or 'materialized'}" in done[0]
    rows = metadata["base_profiles"]["rows"].value
    assert rows > 0 and f"base_profiles: rows {rows}, users {rows}" in out
    assert "check history_length_bounds passed" in out and "check candidates_valid passed" in out
    starts = [i for i, line in enumerate(lines) if "  start  base_profiles" in line]
    ends = [i for i, line in enumerate(lines) if "  done   base_profiles" in line]
    assert starts[0] < ends[0]

    generated = metadata["base_profiles"]["generated_now"].value
    assert generated > 0 and re.search(rf"Base profiles: +100%.*{generated}/{generated}", err), err[-2000:]

    summary = reporter.summary()
    assert summary.startswith("Wall time ") and f"domain_data [{DOMAIN}]" in summary
    step_rows = summary.split("by step (its run in brackets):\n")[1].splitlines()
    assert len(step_rows) == len({s for s, a in steps.items() if set(a) & job_assets})
    shares = [float(re.search(r"([\d.]+) %$", row).group(1)) for row in step_rows]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.5


def test_a_failed_step_is_reported_with_its_error_and_the_summary_still_comes(tiny_chat_dir, capsys):
    reporter = RunReporter(assets_by_step())
    with DagsterInstance.ephemeral() as instance:
        assert not run_job("domain_data", "broken-fixture", instance, _tiny(tiny_chat_dir), reporter).success
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if "  FAILED interactions, items after " in line]
    assert len(failed) == 1 and "Books.jsonl: no valid line" in failed[0], out
    assert "  done   interactions, items" not in out and "  start  base_profiles" not in out  # downstream skipped
    assert "domain_data [broken-fixture]: FAILED in " in out
    summary = reporter.summary()
    assert re.search(r"domain_data \[broken-fixture\] +\S+ +[\d.]+ %  FAILED", summary), summary
    assert re.search(r"interactions, items  \(domain_data \[broken-fixture\]\) +\S+ +[\d.]+ %  FAILED", summary), summary
