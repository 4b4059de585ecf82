"""Version-aware automation: downstream runs only when an upstream's data version actually changed."""

from __future__ import annotations

from dagster import AutomationCondition


def on_upstream_data_change() -> AutomationCondition:
    return AutomationCondition.eager().replace("newly_updated", AutomationCondition.data_version_changed())
