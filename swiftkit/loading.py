"""Load any model reference into (model, tokenizer): the one loading path every stage uses."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from swiftkit.artifacts import ModelRef, ServingInfo
from swiftkit.errors import ArtifactError, SwiftkitError
from swiftkit.resolve import resolve_model_ref

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def default_device(device: str | None = None) -> str:
    """`device` if given, else cuda when there is one, else cpu."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def torch_dtype(name: str, device: str | None = None):
    """`auto` means bfloat16 on CUDA and float32 on CPU (CPU bf16 matmuls are slow and lossy)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if default_device(device).startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def tokenizer_dir(ref: ModelRef) -> Path:
    """The artifact's own tokenizer (adapters carry the template they were trained with), else the base's."""
    for candidate in (ref.path, *reversed(ref.adapters), ref.base_path):
        if any((candidate / f).is_file() for f in TOKENIZER_FILES):
            return candidate
    raise ArtifactError(f"no tokenizer files found for {ref.ref}")


def load_tokenizer(ref: ModelRef, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(ref), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_weights(mref: ModelRef) -> None:
    """Open every safetensors header of the model and its adapters: a truncated or damaged file is one
    line naming it, before anything is loaded or written."""
    from safetensors import SafetensorError, safe_open

    for folder in (mref.base_path, *mref.adapters):
        for file in sorted(folder.glob("*.safetensors")):
            try:
                with safe_open(file, "pt"):
                    pass
            except (SafetensorError, OSError) as exc:
                raise ArtifactError(
                    f"{file}: not a readable safetensors file ({exc})", "it is truncated or damaged: download or rebuild it"
                ) from None


def load_model(
    ref: str | Path | ModelRef,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    merge_adapters: bool = True,
    **from_pretrained: Any,
):
    """Build the weights a reference describes: base, then each adapter of its chain in order.

    With `merge_adapters`, every adapter is merged (plain model returned); otherwise the last one
    stays a PEFT adapter (for training on top of it or multi-adapter serving).
    """
    from transformers import AutoModelForCausalLM

    mref = ref if isinstance(ref, ModelRef) else resolve_model_ref(ref)
    check_weights(mref)
    if getattr(mref.manifest, "task", None) == "reward":
        # AutoModelForCausalLM would load its backbone and a fresh, random LM head without complaint.
        raise SwiftkitError(
            f"{mref.ref} is a reward model (a sequence classifier from `swiftkit rm`), not a text generator",
            f"use it as a GRPO reward (swiftkit grpo --reward rm:{mref.ref}) or load it with AutoModelForSequenceClassification",
        )
    model = AutoModelForCausalLM.from_pretrained(
        mref.base_path, dtype=torch_dtype(dtype, device), trust_remote_code=trust_remote_code, **from_pretrained
    )
    if device:
        model.to(device)
    if mref.adapters:
        from peft import PeftModel

        for i, adapter in enumerate(mref.adapters):
            model = PeftModel.from_pretrained(model, adapter)
            if merge_adapters or i < len(mref.adapters) - 1:
                model = model.merge_and_unload()
    model.eval()
    return model, load_tokenizer(mref, trust_remote_code), mref


@contextlib.contextmanager
def full_weights_dir(ref: ModelRef, model, tokenizer) -> Iterator[Path]:
    """A HF-format directory of the full weights `model` holds: the base itself, or (for an adapter chain)
    the merged model written to a temp dir. For tools that read a directory (GPTQModel, llama.cpp's converter):
    handing them the base of an un-merged LoRA would silently drop the fine-tuning.
    """
    if not ref.adapters:
        del model  # this frame stays alive while the caller works: it must not pin the weights
        yield ref.base_path
        return
    from swiftkit.console import console

    with tempfile.TemporaryDirectory(prefix="swiftkit-merged-") as tmp:
        with console.status(f"writing the merged model ({len(ref.adapters)} adapter(s))"):
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        del model  # the caller drops its reference too, so the full-precision weights can be freed
        yield Path(tmp)


def serving_info(tokenizer, model=None, stop: list[str] | None = None) -> ServingInfo:
    """Chat template / eos / pad exactly as the tokenizer and generation config define them."""
    eos_ids: list[int] = []
    gen = getattr(model, "generation_config", None) if model is not None else None
    if gen is not None and gen.eos_token_id is not None:
        eos_ids = list(gen.eos_token_id) if isinstance(gen.eos_token_id, (list, tuple)) else [gen.eos_token_id]
    elif tokenizer.eos_token_id is not None:
        eos_ids = [tokenizer.eos_token_id]
    return ServingInfo(
        chat_template=tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
        eos_token=tokenizer.eos_token,
        eos_token_ids=eos_ids,
        pad_token=tokenizer.pad_token,
        bos_token=tokenizer.bos_token,
        stop=stop or [],
    )
