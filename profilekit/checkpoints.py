"""Training checkpoints: orbax step checkpoints (policy parameters, optimizer state, per-step log, and what the
parameters are: the base version and, for LoRA, the adapters' config), the content hash of parameters (a
checkpoint's data version), and loading a checkpoint into a model for inference (merging LoRA adapters)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from profilekit.llm import lora
from profilekit.profiler import ChatLM


class CheckpointStore:
    """orbax step checkpoints: policy parameters, optimizer state, the run's log (any JSON value) and the
    parameters' meta ({"base_version", "lora": LoraConfig fields or None}), the last two kept."""

    def __init__(self, directory: Path | str, max_to_keep: int = 2, read_only: bool = False):
        """`read_only` for reading a run that another process may be writing: nothing is created or removed."""
        self.directory = Path(directory).resolve()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=not read_only, read_only=read_only),
            item_names=("params", "opt_state", "log", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, params, opt_state, log: list | dict, meta: dict | None = None) -> None:
        items = {"params": ocp.args.StandardSave(params), "opt_state": ocp.args.StandardSave(opt_state),
                 "log": ocp.args.JsonSave(log)}
        if meta is not None:
            items["meta"] = ocp.args.JsonSave(meta)
        self.manager.save(step, args=ocp.args.Composite(**items))
        self.manager.wait_until_finished()

    def restore(self, step: int, params, opt_state=None):
        """Parameters (and optimizer state when a template is given) of `step`, and its log."""
        items = {"params": ocp.args.StandardRestore(params), "log": ocp.args.JsonRestore()}
        if opt_state is not None:
            items["opt_state"] = ocp.args.StandardRestore(opt_state)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return out["params"], out.get("opt_state") if opt_state is not None else None, out["log"]

    def log(self, step: int) -> list | dict:
        """The run's log saved with `step`, without its parameters."""
        return self.manager.restore(step, args=ocp.args.Composite(log=ocp.args.JsonRestore()))["log"]

    def meta(self, step: int) -> dict:
        """The meta saved with `step`; {} for a checkpoint saved without (full fine-tune, before meta existed)."""
        if not (self.directory / str(step) / "meta").exists():
            return {}
        return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def close(self) -> None:
        self.manager.close()


def params_digest(params) -> str:
    """Content hash of parameter values (the checkpoint's data version)."""
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda kv: jax.tree_util.keystr(kv[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:24]


def lora_of(meta: dict) -> lora.LoraConfig | None:
    """The LoRA config a checkpoint's meta records (None: full fine-tune)."""
    return lora.LoraConfig(**meta["lora"]) if meta.get("lora") else None


def load_trained_policy(policy: ChatLM, checkpoint_dir: Path | str) -> tuple[ChatLM, int]:
    """Load the latest checkpoint into `policy` (a freshly loaded base model) for inference: its parameters, or
    for LoRA its adapters merged into the base weights (which must be the base it was trained from)."""
    store = CheckpointStore(checkpoint_dir)
    step = store.latest_step()
    if step is None:
        raise FileNotFoundError(f"{checkpoint_dir} holds no checkpoint: materialize profiler_checkpoint first")
    meta = store.meta(step)
    config = lora_of(meta)
    if config is None:
        _, params, _ = nnx.split(policy.lm.model, nnx.Param, ...)
        params, _, _ = store.restore(step, params)
        nnx.update(policy.lm.model, params)
    else:
        if meta["base_version"] != policy.version:
            store.close()
            raise ValueError(f"{checkpoint_dir} holds LoRA adapters trained on base {meta['base_version']}, "
                             f"not on the loaded {policy.version}")
        template = lora.init_adapters(policy.lm.model, config, jax.random.PRNGKey(0))
        adapters, _, _ = store.restore(step, template)
        lora.merge_into(policy.lm.model, lora.base_targets(policy.lm.model, config), adapters, config)
    store.close()
    policy.sampler.reload_weights()
    return policy, step
