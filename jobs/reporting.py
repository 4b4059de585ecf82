"""What `make run` prints while it works: one line per asset step as it starts and as it ends (with the key
figures of what it materialized), and at the end where the wall time went.

The lines come from the run's own Dagster events (STEP_START, ASSET_MATERIALIZATION, ASSET_CHECK_EVALUATION,
STEP_SUCCESS, STEP_FAILURE), received through an instance event listener while `execute_in_process` runs, so they
appear as the steps happen, not after the run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from dagster import (
    DagsterEventType,
    DagsterInstance,
    EventLogEntry,
    FloatMetadataValue,
    IntMetadataValue,
    TextMetadataValue,
)

# Metadata entries worth a glance, in the order they are shown (at most MAX_FIGURES per asset); an asset's own
# `headline` text (its main metric) comes after them.
KEY_FIGURES = (
    "rows", "users", "evaluated_users", "train_users", "items", "examples", "pairs", "train_examples", "step", "steps",
    "trained_now", "generated_now", "profiles_generated_now", "encoded_now", "final_reward_mean", "final_loss",
)
MAX_FIGURES = 4


def key_figures(metadata: Mapping[str, object]) -> str:
    """`rows 1000, users 6040, ...` from an asset materialization's metadata; empty when none of the known
    entries is there."""
    shown = []
    for name in KEY_FIGURES:
        value = metadata.get(name)
        if isinstance(value, IntMetadataValue) and value.value is not None:
            shown.append(f"{name} {value.value}")
        elif isinstance(value, FloatMetadataValue) and value.value is not None:
            shown.append(f"{name} {value.value:.4g}")
        if len(shown) == MAX_FIGURES:
            break
    headline = metadata.get("headline")
    if isinstance(headline, TextMetadataValue) and headline.value:
        shown.append(headline.value)
    return ", ".join(shown)


@dataclass
class _Step:
    started: float
    assets: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)


@dataclass
class Timing:
    """One wall-time entry of the summary: a run, or a step of a run."""

    label: str
    seconds: float
    ok: bool


class RunReporter:
    """Prints progress lines for the runs it watches and keeps their wall times for `summary()`.

    `assets_by_step`: the asset keys each step materializes (a multi-asset step has several), so a start line can
    name them before anything is materialized; steps it does not know are named by their step key."""

    def __init__(self, assets_by_step: Mapping[str, Sequence[str]] | None = None, out: TextIO | None = None):
        self.assets_by_step = dict(assets_by_step or {})
        self.out = out
        self.started = time.monotonic()
        self.runs: list[Timing] = []
        self.steps: list[Timing] = []
        self._open: dict[str, _Step] = {}
        self._label = ""

    def _print(self, line: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{_clock(elapsed):>8}] {line}", file=self.out or sys.stdout, flush=True)

    def _step_name(self, step_key: str) -> str:
        return ", ".join(self.assets_by_step.get(step_key, [step_key]))

    def watch(self, instance: DagsterInstance, run_id: str, label: str) -> None:
        """Report the events of run `run_id` (before it starts); `label` names it, e.g. `domain_data [ml-1m]`."""
        self._label = label
        self._print(f"{label}: started (run {run_id[:8]})")
        instance.add_event_listener(run_id, self.on_event)

    def on_event(self, entry: EventLogEntry) -> None:
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            return
        kind, key = event.event_type, entry.step_key
        if kind == DagsterEventType.STEP_START:
            self._open[key] = _Step(entry.timestamp)
            self._print(f"  start  {self._step_name(key)}")
        elif kind == DagsterEventType.ASSET_MATERIALIZATION and key in self._open:
            materialization = entry.asset_materialization
            figures = key_figures(materialization.metadata)
            self._open[key].assets.append(f"{materialization.asset_key.to_user_string()}: {figures or 'materialized'}")
        elif kind == DagsterEventType.ASSET_CHECK_EVALUATION and key in self._open:
            check = event.event_specific_data
            self._open[key].checks.append(f"check {check.check_name} {'passed' if check.passed else 'FAILED'}")
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and key in self._open:
            step = self._open.pop(key)
            seconds = entry.timestamp - step.started
            ok = kind == DagsterEventType.STEP_SUCCESS
            self.steps.append(Timing(f"{self._step_name(key)}  ({self._label})", seconds, ok))
            if ok:
                outcome = "; ".join(step.assets + step.checks)
                self._print(f"  done   {self._step_name(key)} in {seconds:.1f} s: {outcome}")
            else:
                error = event.step_failure_data.error
                message = error.message.strip().splitlines()[0] if error is not None else "no error recorded"
                self._print(f"  FAILED {self._step_name(key)} after {seconds:.1f} s: {message}")

    def run_finished(self, seconds: float, ok: bool) -> None:
        self.runs.append(Timing(self._label, seconds, ok))
        self._print(f"{self._label}: {'succeeded' if ok else 'FAILED'} in {_clock(seconds)}")

    def summary(self, before_runs: float | None = None) -> str:
        """Where the wall time went: the runs, then every step, each sorted from the longest. `before_runs`:
        seconds spent before the first run (environment setup, imports), shown as its own row when known."""
        total = time.monotonic() - self.started + (before_runs or 0.0)
        rows = list(self.runs)
        if before_runs is not None:
            rows.append(Timing("setup and imports before the first run", before_runs, True))
        lines = [f"Wall time {_clock(total)}, by run:"]
        lines += _table(rows, total)
        lines.append("by step (its run in brackets):")
        lines += _table(self.steps, total)
        return "\n".join(lines)


def _table(rows: list[Timing], total: float) -> list[str]:
    width = max((len(r.label) for r in rows), default=0)
    return [
        f"  {r.label:<{width}}  {_clock(r.seconds):>8}  {100 * r.seconds / total if total else 0.0:5.1f} %"
        + ("" if r.ok else "  FAILED")
        for r in sorted(rows, key=lambda r: r.seconds, reverse=True)
    ]


def _clock(seconds: float) -> str:
    """`42.0s`, `3m05s`, `1h02m`: short enough for a line prefix."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
