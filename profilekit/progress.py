"""Progress bars for the long loops (profile generation, embedding, GRPO and SCL steps), on stderr.

On by default only when stderr is a terminal, so `make run` shows them while tests, CI logs and runs launched by
the Dagster daemon stay quiet; the application may force them on or off (`show_progress`; the Dagster code does
so from PROFILEKIT_PROGRESS).
"""

from __future__ import annotations

import sys

from tqdm import tqdm

_FORCED: bool | None = None


def show_progress(enabled: bool | None) -> None:
    """Force the bars on (True) or off (False) in this process; None: only when stderr is a terminal."""
    global _FORCED
    _FORCED = enabled


def progress_enabled() -> bool:
    return sys.stderr.isatty() if _FORCED is None else _FORCED


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True) -> tqdm:
    """A bar over `total` units (close it, or use `with`); a silent one when progress is off or `enabled` is false.
    Bars disappear when done (`leave=False`): the run reporter prints one finished line per asset instead."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and progress_enabled()), leave=False,
                dynamic_ncols=True, file=sys.stderr)
