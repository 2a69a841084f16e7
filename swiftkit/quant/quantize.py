"""`swiftkit quantize`: merge adapters, calibrate, quantize, write, then verify the written checkpoint.

A checkpoint that fails verification never appears at `--output`: its files and the report
(`verification.json`) are moved to `<output>.failed/` and the command exits non-zero.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import time
from importlib import metadata
from pathlib import Path

from swiftkit.artifacts import (
    Manifest,
    ModelRef,
    artifact_writer,
    default_output,
    keep_failed,
    write_manifest,
)
from swiftkit.console import console, summary
from swiftkit.errors import ArtifactError, SwiftkitError
from swiftkit.quant.config import QuantizeConfig
from swiftkit.resolve import resolve_model_ref

# Libraries each method needs at quantization time and for transformers to reload the result.
REQUIRED = {
    "gptq": ("gptqmodel", "optimum"),
    "awq": ("gptqmodel", "optimum"),
    "bnb-nf4": ("bitsandbytes",),
    "bnb-int8": ("bitsandbytes",),
}
QUANT_LIBRARIES = ("gptqmodel", "optimum", "bitsandbytes", "transformers", "torch")


def run(cfg: QuantizeConfig) -> Path:
    started = time.time()
    _check_libraries(cfg.method)
    ref = resolve_model_ref(cfg.model)
    if ref.is_quantized:
        raise ArtifactError(
            f"{ref.path} is already quantized ({ref.manifest.quantization.get('method')})",
            "quantize the full-precision model it came from",
        )
    output = Path(cfg.output) if cfg.output else default_output("quantize")

    import torch

    from swiftkit.loading import full_weights_dir, load_model, load_tokenizer, serving_info, torch_dtype
    from swiftkit.quant.calibration import build_text_set
    from swiftkit.quant.verify import (
        VerificationFailed,
        checkpoint_bytes,
        linear_weight_bytes,
        perplexity,
        probe_ids,
    )

    torch.manual_seed(cfg.seed)
    work_dtype = torch_dtype(cfg.dtype, "cpu")
    if cfg.method == "awq" and work_dtype == torch.float32:
        work_dtype = torch.float16  # GPTQModel's CPU AWQ kernel computes only in half precision
    # Everything that can refuse the request runs before the weights are loaded.
    skeleton = _skeleton(ref, cfg.trust_remote_code)
    modules = _quantizable_linears(skeleton)
    auto_group = cfg.group_size is None
    _check_model(cfg, skeleton, modules)
    max_positions = getattr(skeleton.config, "max_position_embeddings", None) or cfg.max_length
    texts = build_text_set(
        cfg.data,
        cfg.eval_data,
        load_tokenizer(ref, cfg.trust_remote_code),
        cfg.n_samples,
        min(cfg.max_length, max_positions),
        cfg.eval_tokens,
        cfg.seed,
        need_samples=cfg.method in ("gptq", "awq"),
    )
    if cfg.method in ("gptq", "awq"):
        _check_architecture(skeleton.config.model_type)
    del skeleton
    with console.status("loading the parent model (adapters merged)"):
        parent, tokenizer, ref = load_model(ref, dtype=cfg.dtype, device="cpu", trust_remote_code=cfg.trust_remote_code)
    with console.status("scoring the parent on held-out text"):
        parent_ppl = perplexity(parent, texts.eval_windows)
    serving = ref.manifest.serving if ref.manifest and ref.manifest.serving else serving_info(tokenizer, parent)

    with full_weights_dir(ref, parent, tokenizer) as source:
        del parent
        size_before = checkpoint_bytes(source)
        linear_before = linear_weight_bytes(source, modules)
        with artifact_writer(output, overwrite=cfg.overwrite) as tmp:
            grouping = f", group {cfg.group_size}" if cfg.method in ("gptq", "awq") else ""
            console.print(f"quantizing with {cfg.method} ({cfg.bits}-bit{grouping}) ...")
            probe = probe_ids(texts.eval_windows)
            reference = _quantize(cfg, source, tmp, texts.samples, probe, work_dtype)
            # The parent's tokenizer (an adapter's own template included) and generation config go along.
            tokenizer.save_pretrained(tmp)
            if (source / "generation_config.json").is_file():
                shutil.copy2(source / "generation_config.json", tmp / "generation_config.json")
            with console.status("verifying: reload with transformers, logits, generate, perplexity"):
                from swiftkit.quant.verify import verify_checkpoint

                check = verify_checkpoint(
                    tmp,
                    reference_logits=reference,
                    probe=probe,
                    eval_windows=texts.eval_windows,
                    parent_ppl=parent_ppl,
                    max_ppl_increase=cfg.max_ppl_increase,
                    logits_tolerance=cfg.logits_tolerance,
                    dtype=work_dtype,
                    trust_remote_code=cfg.trust_remote_code,
                )
            sizes = {
                "checkpoint_bytes_before": size_before,
                "checkpoint_bytes_after": checkpoint_bytes(tmp),
                "linear_weight_bytes_before": linear_before,
                "linear_weight_bytes_after": linear_weight_bytes(tmp, modules),
            }
            verification = check.as_dict() | sizes
            if not check.passed:
                failed = keep_failed(tmp, output, verification)
                raise VerificationFailed(
                    f"{cfg.method} checkpoint failed verification: {'; '.join(check.failures)}",
                    f"nothing was written to {output}; the checkpoint and report are in {failed}",
                )
            elapsed = time.time() - started
            quantization = {
                "method": cfg.method,
                "bits": cfg.bits,
                "group_size": cfg.group_size if cfg.method in ("gptq", "awq") else None,
                "group_size_chosen": "auto (largest of 128/64/32 dividing every width)" if auto_group else "given",
                "format": cfg.format,
                "calibration": texts.manifest_entry(used=cfg.method in ("gptq", "awq")),
                "verification": verification,
                "libraries": _versions(),
            }
            write_manifest(
                tmp,
                Manifest(
                    kind="model",
                    stage="quantize",
                    parents=[str(ref.path)],
                    config=cfg.model_dump(),
                    data=texts.manifest_entry(used=False),
                    quantization=quantization,
                    serving=serving,
                    metrics={
                        "ppl_parent": check.ppl_parent,
                        "ppl_quantized": check.ppl_quantized,
                        "seconds": round(elapsed, 1),
                    },
                ),
            )
    summary(
        f"quantize ({cfg.method}, {cfg.bits}-bit)",
        [
            ("size", f"{_mb(size_before)} -> {_mb(sizes['checkpoint_bytes_after'])}"),
            (
                "linear weights",
                f"{_mb(linear_before)} -> {_mb(sizes['linear_weight_bytes_after'])} "
                f"(x{linear_before / max(1, sizes['linear_weight_bytes_after']):.2f} smaller)",
            ),
            (
                "perplexity",
                f"{check.ppl_parent:.4g} -> {check.ppl_quantized:.4g} ({(check.ppl_ratio - 1) * 100:+.2f}%)",
            ),
            ("reloaded vs in-memory logits", f"{check.logits_rel_error:.2%} relative RMS"),
            ("verification", "passed"),
            ("time", f"{elapsed:.0f}s"),
        ],
        artifact=str(output.resolve()),
    )
    return output.resolve()


def _check_libraries(method: str) -> None:
    missing = [name for name in REQUIRED[method] if importlib.util.find_spec(name) is None]
    if missing:
        raise SwiftkitError(
            f"--method {method} needs {', '.join(missing)}, which is not installed",
            "pip install 'swiftkit[quant]'",
        )


def _quantizable_linears(model) -> list[str]:
    """The decoder layers' Linear modules: what GPTQ/AWQ/bnb quantize (embeddings and lm_head stay)."""
    import torch

    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}" and "lm_head" not in name
    ]


def _skeleton(ref: ModelRef, trust_remote_code: bool):
    """The model's modules on the meta device: shapes without loading (or allocating) any weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(ref.base_path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def _check_architecture(model_type: str) -> None:
    from gptqmodel.models.auto import SUPPORTED_MODELS

    if model_type not in SUPPORTED_MODELS:
        raise SwiftkitError(f"GPTQModel does not support the {model_type!r} architecture", "try --method bnb-nf4 or bnb-int8")


# Group sizes tried, largest first, when --group-size is not given: real models have widths such as
# 576 (SmolLM2) or 2880 that 128 does not divide, and smaller groups only cost a little more space.
AUTO_GROUP_SIZES = (128, 64, 32)


def _check_model(cfg: QuantizeConfig, model, modules: list[str]) -> None:
    """Refuse layer shapes the method cannot quantize (adapters never change them); pick the default group size."""
    if not modules:
        raise SwiftkitError(f"found no decoder Linear layers to quantize in {type(model).__name__}")
    if cfg.method not in ("gptq", "awq"):
        return
    widths = {model.get_submodule(name).in_features: name for name in modules}
    if cfg.group_size is None:
        fitting = [g for g in AUTO_GROUP_SIZES if all(w % g == 0 for w in widths)]
        if not fitting:
            raise SwiftkitError(
                f"none of the group sizes {AUTO_GROUP_SIZES} divides every input width {sorted(widths)}",
                "pass --group-size -1 (one group per row) or a size that divides them",
            )
        cfg.group_size = fitting[0]
    elif cfg.group_size > 0:
        bad = {w: n for w, n in widths.items() if w % cfg.group_size}
        if bad:
            width, name = next(iter(bad.items()))
            divisors = [g for g in (32, 64, 128) if all(w % g == 0 for w in widths)]
            raise SwiftkitError(
                f"--group-size {cfg.group_size} does not divide the input width {width} of {name}",
                f"use --group-size {divisors[-1]}" if divisors else "use --group-size -1 (one group per row)",
            )


def _quantize(cfg: QuantizeConfig, source: Path, output: Path, samples: list[list[int]], probe, dtype):
    """Write the quantized checkpoint to `output`; return the in-memory quantized logits on `probe`."""
    if cfg.method == "gptq":
        from swiftkit.quant import gptq

        return gptq.quantize(source, output, cfg.bits, cfg.group_size, samples, probe, dtype, cfg.trust_remote_code)
    if cfg.method == "awq":
        from swiftkit.quant import awq

        return awq.quantize(source, output, cfg.bits, cfg.group_size, samples, probe, dtype, cfg.trust_remote_code)
    from swiftkit.quant import bnb

    return bnb.quantize(source, output, cfg.method, probe, dtype, cfg.double_quant, cfg.trust_remote_code)


def _versions() -> dict[str, str]:
    found = {}
    for name in QUANT_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"
