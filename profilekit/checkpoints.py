"""Training checkpoints: orbax step checkpoints (policy parameters, optimizer state, per-step log), the content
hash of parameters (a checkpoint's data version), and loading a checkpoint into a model for inference."""

from __future__ import annotations

import hashlib
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from profilekit.profiler import ChatLM


class CheckpointStore:
    """orbax step checkpoints: policy parameters, optimizer state and the run's log (any JSON value), the last two
    kept."""

    def __init__(self, directory: Path | str, max_to_keep: int = 2):
        self.directory = Path(directory).resolve()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("params", "opt_state", "log"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, params, opt_state, log: list | dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
                log=ocp.args.JsonSave(log),
            ),
        )
        self.manager.wait_until_finished()

    def restore(self, step: int, params, opt_state=None):
        """Parameters (and optimizer state when a template is given) of `step`, and its log."""
        items = {"params": ocp.args.StandardRestore(params), "log": ocp.args.JsonRestore()}
        if opt_state is not None:
            items["opt_state"] = ocp.args.StandardRestore(opt_state)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return out["params"], out.get("opt_state") if opt_state is not None else None, out["log"]

    def close(self) -> None:
        self.manager.close()


def params_digest(params) -> str:
    """Content hash of parameter values (the checkpoint's data version)."""
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda kv: jax.tree_util.keystr(kv[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:24]


def load_trained_policy(policy: ChatLM, checkpoint_dir: Path | str) -> tuple[ChatLM, int]:
    """Load the latest checkpoint's parameters into `policy` (a freshly loaded base model) for inference."""
    store = CheckpointStore(checkpoint_dir)
    step = store.latest_step()
    if step is None:
        raise FileNotFoundError(f"{checkpoint_dir} holds no checkpoint: materialize profiler_checkpoint first")
    _, params, _ = nnx.split(policy.lm.model, nnx.Param, ...)
    params, _, _ = store.restore(step, params)
    store.close()
    nnx.update(policy.lm.model, params)
    policy.sampler.reload_weights()
    return policy, step
