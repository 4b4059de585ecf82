"""Materialize one domain's data tables (interactions, items, filtered_histories, candidate_sets) with the local
resources and print the row count each materialization reported, as JSON.

    python -m tests.processes.data_partition DOMAIN
"""

import json
import sys

from dagster import AssetSelection, DagsterInstance, load_assets_from_modules, materialize

from assets import data
from orchestration.resources import local_resources


def main(domain: str) -> int:
    result = materialize(
        load_assets_from_modules([data]), partition_key=domain, resources=local_resources(),
        instance=DagsterInstance.ephemeral(),
        selection=AssetSelection.groups("data") - AssetSelection.assets("raw_domain_files"),
    )
    rows = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata["rows"].value
            for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    print(json.dumps(rows))
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
