"""`swiftkit merge`: fold an adapter (or a whole adapter chain) into its base as a plain model artifact.

Saved in the base's own dtype with tokenizer (the template training used), generation config and eos
intact, then verified: the saved model is reloaded from disk and its logits must equal base+adapter
logits within --tolerance (the max difference goes into the manifest).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from swiftkit.artifacts import (
    Manifest,
    ModelRef,
    artifact_writer,
    default_output,
    read_manifest,
    write_manifest,
)
from swiftkit.console import console, summary
from swiftkit.errors import SwiftkitError
from swiftkit.resolve import resolve_model_ref
from swiftkit.train.config import MergeConfig

# Probe texts for the equivalence check: chat-formatted and plain, different lengths (padding exercised).
PROBES = [
    [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "42"}],
    [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Tell me the sum of 7 and 8, please."},
    ],
]
PLAIN_PROBE = "The model learns numbers and words from text: 37 + 45 = 82"


def run(cfg: MergeConfig) -> Path:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from swiftkit.loading import check_weights, load_tokenizer, serving_info, torch_dtype
    from swiftkit.train.common import quiet_workers

    quiet_workers()
    started = time.time()
    mref = resolve_model_ref(cfg.model)
    check_weights(mref)
    if not mref.adapters:
        raise SwiftkitError(
            f"nothing to merge: {mref.path} is a full model, not an adapter artifact",
            "give the adapter artifact sft/dpo wrote",
        )
    quantization = base_quantization(mref)
    if quantization and not cfg.dequantize:
        raise SwiftkitError(
            f"refusing to merge into quantized weights ({quantization}) of {mref.base_path}: the merged model would silently degrade",
            "merge into the full-precision base instead, or pass --dequantize to dequantize the base first",
        )
    dtype = base_dtype(mref.base_path) if cfg.dtype == "auto" else torch_dtype(cfg.dtype)
    output = Path(cfg.output or default_output("merge"))
    tokenizer = load_tokenizer(mref, cfg.trust_remote_code)

    with artifact_writer(output, overwrite=cfg.overwrite) as tmp:  # a full disk there is one line (artifact_writer)
        model = AutoModelForCausalLM.from_pretrained(mref.base_path, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
        if quantization:
            model = _dequantize(model, mref.base_path)
        for adapter in mref.adapters[:-1]:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        model = PeftModel.from_pretrained(model, mref.adapters[-1])
        model.eval()
        inputs = probe_inputs(tokenizer)
        with torch.no_grad():
            expected = model(**inputs).logits.float()
        merged = model.merge_and_unload()
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype, trust_remote_code=cfg.trust_remote_code).eval()
        with torch.no_grad():
            got = reloaded(**inputs).logits.float()
        keep = inputs["attention_mask"].bool()
        max_diff = float((got - expected).abs()[keep].max())
        if max_diff > cfg.tolerance:
            raise SwiftkitError(
                f"merged model differs from base+adapter: max logit difference {max_diff:.3g} > --tolerance {cfg.tolerance}",
                "for bfloat16/float16 bases a larger --tolerance is expected; otherwise report this",
            )
        manifest = Manifest(
            kind="model",
            stage="merge",
            parents=[str(mref.path)],
            config=cfg.model_dump(),
            metrics={
                "max_logit_diff": max_diff,
                "adapters_merged": len(mref.adapters),
                "dtype": str(dtype).removeprefix("torch."),
                "dequantized": bool(quantization),
                "runtime_s": round(time.time() - started, 3),
            },
            serving=serving_info(tokenizer, reloaded),
            merged={"base": str(mref.base_path), "adapters": [str(a) for a in mref.adapters]},
        )
        write_manifest(tmp, manifest)
    console.log(f"verified: merged logits match base+adapter within {max_diff:.2g}")
    summary(
        "merge",
        [
            ("adapters", " -> ".join(a.name for a in mref.adapters)),
            ("base", str(mref.base_path)),
            ("dtype", manifest.metrics["dtype"]),
            ("max logit diff", f"{max_diff:.3g} (tolerance {cfg.tolerance:g})"),
        ],
        artifact=str(output.resolve()),
    )
    return output.resolve()


def base_quantization(mref: ModelRef) -> str | None:
    """The base's quantization method, from its manifest or its config.json (GPTQ/AWQ/bnb dirs)."""
    manifest = read_manifest(mref.base_path)
    if manifest and manifest.quantization:
        return str(manifest.quantization.get("method", "quantized"))
    config = json.loads((mref.base_path / "config.json").read_text())
    qc = config.get("quantization_config")
    if not qc:
        return None
    if qc.get("load_in_4bit"):
        return "bitsandbytes 4-bit"
    if qc.get("load_in_8bit"):
        return "bitsandbytes 8-bit"
    return str(qc.get("quant_method", "quantized"))


def base_dtype(path: Path):
    """The dtype the base was saved in (merging must not silently change it)."""
    import torch

    config = json.loads((path / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, str(name), torch.float32)


def _dequantize(model, path: Path):
    try:
        return model.dequantize()
    except Exception as exc:  # each quantization backend fails differently; one line for the user
        raise SwiftkitError(f"cannot dequantize {path}: {exc}", "merge into the original full-precision model instead") from None


def probe_inputs(tokenizer):
    texts = [tokenizer.apply_chat_template(m, tokenize=False) for m in PROBES] if tokenizer.chat_template else []
    texts.append(PLAIN_PROBE)
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
