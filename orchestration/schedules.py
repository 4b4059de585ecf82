"""The nightly profile refresh.

At 02:00 the raw files of every domain are observed. A domain whose files changed gets a new data version, and
version-aware automation re-materializes that domain's chain; profiles are regenerated only for users whose
prompt changed (the generation cache answers the rest), so a second refresh of the same night changes nothing.
"""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    ScheduleDefinition,
    define_asset_job,
)

observe_raw_files = define_asset_job(
    "observe_raw_files", selection=AssetSelection.keys("raw_domain_files"), description="Hash every domain's raw files."
)

observe_method_configs = define_asset_job(
    "observe_method_configs", selection=AssetSelection.keys("method_configs"),
    description="Hash every trained method's reward configuration (run after changing one; re-trains only that method).",
)

nightly_profile_refresh = ScheduleDefinition(
    name="nightly_profile_refresh", job=observe_raw_files, cron_schedule="0 2 * * *", execution_timezone="UTC"
)

profile_automation = AutomationConditionSensorDefinition(
    "profile_automation", target=AssetSelection.all(), default_status=DefaultSensorStatus.RUNNING
)
