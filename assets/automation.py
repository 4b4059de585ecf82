"""Version-aware automation: downstream runs only when an upstream's data version actually changed."""

from __future__ import annotations

from dagster import AssetSelection, AutomationCondition


def on_upstream_data_change(gathered: tuple[str, ...] = ()) -> AutomationCondition:
    """eager(), triggered by changed data versions only. `gathered`: upstream assets read across every method's
    partition (e.g. all methods' generated profiles of a domain), where a missing partition is a method nobody
    trained yet, not something to wait for; their updates still trigger. While a gathered upstream is about to be
    recomputed (it is requested now, or its own inputs just changed or are being requested), the table waits for
    it instead of being computed twice in one refresh; eager's `since_last_handled` keeps the pending update."""
    condition = AutomationCondition.eager().replace("newly_updated", AutomationCondition.data_version_changed())
    if gathered:
        selection = AssetSelection.assets(*gathered)
        condition = condition.replace(
            "any_deps_missing", AutomationCondition.any_deps_missing().ignore(selection)
        )
        coming = AutomationCondition.newly_updated() | AutomationCondition.will_be_requested()
        about_to_change = AutomationCondition.will_be_requested() | AutomationCondition.any_deps_match(coming)
        condition = condition & ~AutomationCondition.any_deps_match(about_to_change).allow(selection)
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
