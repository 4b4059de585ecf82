"""Train BLUE for 2 steps on the tiny setup, writing each finished step to a marker file and sleeping after step
`KILLED_AFTER`, so the test can kill the process there (after that step's checkpoint is saved, before the next).

    python -m tests.processes.killed_training MODEL_DIR CHECKPOINT_DIR MARKER
"""

import sys
import time
from pathlib import Path

from profilekit.methods import METHODS
from profilekit.training import train_profiler
from tests.training_setup import config, setup

KILLED_AFTER = 1


def main(model_dir: str, checkpoint_dir: str, marker: str) -> None:
    chat, data, models = setup(model_dir)

    def on_step(record: dict) -> None:
        Path(marker).write_text(str(record["step"]))
        if record["step"] == KILLED_AFTER:
            time.sleep(60)  # the parent kills us here

    train_profiler(chat, data, METHODS["blue"], config(2), checkpoint_dir, models, on_step=on_step)


if __name__ == "__main__":
    main(*sys.argv[1:4])
