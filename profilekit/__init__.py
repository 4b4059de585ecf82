"""ML core of the profiler pipeline: data, protocol, embedder, metrics. No dagster import here."""
