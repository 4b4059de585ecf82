"""Load the Definitions of the environment PROFILEKIT_ENV names, validate them as the webserver does, and print
a JSON summary of what they hold (executor, resource classes, compute platform, k8s tags)."""

import json

from dagster import Definitions

from orchestration.definitions import defs

JOBS = ["default_graph", "domain_data", "evaluation", "profiler_training", "profiling", "observe_raw_files"]


def main() -> None:
    Definitions.validate_loadable(defs)  # what the webserver and `dagster definitions validate` check
    for job in JOBS:
        defs.resolve_job_def(job)
    tags = defs.resolve_assets_def("profiler_checkpoint").op.tags
    print(json.dumps({
        "executor": defs.resolve_job_def("default_graph").executor_def.name,
        "resources": {k: type(v).__name__ for k, v in defs.resources.items()},
        "platform": defs.resources["compute"].platform,
        "distributed": defs.resources["compute"].distributed,
        "k8s_tag": "dagster-k8s/config" in tags,
    }))


if __name__ == "__main__":
    main()
