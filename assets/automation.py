"""Version-aware automation: downstream runs only when an upstream's data version actually changed."""

from __future__ import annotations

from dagster import AssetSelection, AutomationCondition


def on_upstream_data_change(gathered: tuple[str, ...] = ()) -> AutomationCondition:
    """eager(), triggered by changed data versions only. `gathered`: upstream assets read across every method's
    partition (e.g. all methods' generated profiles of a domain), where a missing partition is a method nobody
    trained yet, not something to wait for; their updates still trigger."""
    condition = AutomationCondition.eager().replace("newly_updated", AutomationCondition.data_version_changed())
    if gathered:
        condition = condition.replace(
            "any_deps_missing", AutomationCondition.any_deps_missing().ignore(AssetSelection.assets(*gathered))
        )
    return condition


def on_method_config_change() -> AutomationCondition:
    """Training is started by people (UI, backfill); automation only re-trains an existing checkpoint whose
    method configuration (reward, advantage estimator) changed. New interactions never re-train on their own."""
    return (
        ~AutomationCondition.missing()
        & AutomationCondition.any_deps_match(AutomationCondition.data_version_changed()).allow(
            AssetSelection.assets("method_configs")
        )
        & ~AutomationCondition.any_deps_missing()
        & ~AutomationCondition.in_progress()
    )
