"""What a GRPO run has done so far, read from its checkpoint directory while it trains or after: the step log in
blocks of steps and the validation curve with each point's paired gain over the first validation on the same
users. Reads without writing, so it is safe beside the running job.

    python -m jobs.run_report <checkpoint dir> [--block 25]

The checkpoint directory of a run is `<data dir>/store/profiler_checkpoint/<method>/<domain>/<run key>`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from absl import logging as absl_logging

from profilekit.checkpoints import CheckpointStore
from profilekit.training import step_log_blocks, validation_gains


def report(checkpoint_dir: Path, block: int) -> str:
    """The report's text: the latest checkpoint's step, its step log in blocks and its validation curve."""
    store = CheckpointStore(checkpoint_dir, read_only=True)
    try:
        step = store.latest_step()
        if step is None:
            raise FileNotFoundError(f"{checkpoint_dir} holds no checkpoint")
        saved = store.log(step)
    finally:
        store.close()
    parts = [f"{checkpoint_dir}: last saved step {step}", "",
             step_log_blocks(saved["steps"], block).to_markdown(index=False, floatfmt=".4g")]
    if saved["validation"]:
        parts += ["", "validation (gain: paired against the first validation, same users)",
                  validation_gains(saved["validation"]).to_markdown(index=False, floatfmt=".4g")]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("--block", type=int, default=25, help="steps per row of the step log")
    args = parser.parse_args(argv)
    if args.block < 1:
        parser.error(f"--block must be at least 1, got {args.block}")
    absl_logging.set_verbosity(absl_logging.ERROR)  # orbax warns about every read-only manager
    try:
        print(report(args.checkpoint_dir, args.block))
    except FileNotFoundError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
