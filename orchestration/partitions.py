"""Partitions: one per domain of the registry, so adding a registry entry adds a partition without code changes."""

from __future__ import annotations

from dagster import StaticPartitionsDefinition

from profilekit.domains import load_registry

domain_partitions = StaticPartitionsDefinition(list(load_registry()))
