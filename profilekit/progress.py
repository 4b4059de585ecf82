"""Progress bars for the long loops (profile generation, embedding, GRPO and SCL steps), on stderr.

On by default only when stderr is a terminal, so `make run` shows them while tests, CI logs and runs launched by
the Dagster daemon stay quiet; PROFILEKIT_PROGRESS=1 / 0 forces them on / off.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def progress_enabled() -> bool:
    forced = os.environ.get("PROFILEKIT_PROGRESS")
    if forced is not None:
        return forced.strip().lower() not in ("", "0", "false", "no", "off")
    return sys.stderr.isatty()


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool = True) -> tqdm:
    """A bar over `total` units (close it, or use `with`); a silent one when progress is off or `enabled` is false.
    Bars disappear when done (`leave=False`): the run reporter prints one finished line per asset instead."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not (enabled and progress_enabled()), leave=False,
                dynamic_ncols=True, file=sys.stderr)
