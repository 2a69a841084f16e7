"""Verification of a written quantized checkpoint, through the path users take: transformers.

A checkpoint passes when it (1) reloads with `AutoModelForCausalLM.from_pretrained`, (2) gives the
same logits as the in-memory quantized model that wrote it (catches broken save/reload, e.g.
bitsandbytes 4-bit on CPU), (3) generates, and (4) keeps perplexity on held-out text within a
bound of the unquantized parent's (catches a quantization that destroyed the model).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from swiftkit.errors import SwiftkitError

PROBE_TOKENS = 64
GENERATE_TOKENS = 8


class VerificationFailed(SwiftkitError):
    """The written checkpoint did not pass verification (kept aside as `<output>.failed/`)."""

    status = 500


@dataclass
class Verification:
    passed: bool
    failures: list[str] = field(default_factory=list)
    reloaded: bool = False
    generated_tokens: int = 0
    logits_rel_error: float | None = None  # RMS(reloaded - in-memory logits) / RMS(in-memory logits)
    logits_max_abs_diff: float | None = None
    ppl_parent: float | None = None
    ppl_quantized: float | None = None
    ppl_ratio: float | None = None
    max_ppl_ratio: float | None = None
    eval_tokens: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def probe_ids(eval_windows: list[list[int]]):
    """A fixed short batch on which the in-memory and reloaded models must agree."""
    import torch

    return torch.tensor([eval_windows[0][:PROBE_TOKENS]])


def logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def perplexity(model, windows: list[list[int]]) -> float:
    """exp(mean next-token NLL) over all held-out windows, token-weighted."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for window in windows:
            ids = torch.tensor([window])
            out = model(input_ids=ids, labels=ids)
            total += out.loss.float().item() * (len(window) - 1)
            count += len(window) - 1
    return math.exp(total / count)


def verify_checkpoint(
    checkpoint: str | Path,
    *,
    reference_logits,
    probe,
    eval_windows: list[list[int]],
    parent_ppl: float,
    max_ppl_increase: float,
    logits_tolerance: float,
    dtype=None,
    trust_remote_code: bool = False,
) -> Verification:
    """Reload `checkpoint` with transformers and run the four checks; never raises for a bad checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    result = Verification(
        passed=False,
        ppl_parent=parent_ppl,
        max_ppl_ratio=1 + max_ppl_increase,
        eval_tokens=sum(len(w) for w in eval_windows),
    )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            checkpoint, dtype=dtype or torch.float32, device_map="cpu", trust_remote_code=trust_remote_code
        )
        model.eval()
    except Exception as exc:  # any reload failure is a verification verdict, not a crash
        result.failures.append(f"transformers cannot reload it: {type(exc).__name__}: {_first_line(exc)}")
        return result
    result.reloaded = True

    try:
        _check_reloaded(model, result, reference_logits, probe, eval_windows, parent_ppl, logits_tolerance)
    except Exception as exc:  # a kernel that cannot run this checkpoint is a verdict too
        result.failures.append(f"the reloaded model fails to run: {type(exc).__name__}: {_first_line(exc)}")
    result.passed = not result.failures
    return result


def _check_reloaded(model, result: Verification, reference_logits, probe, eval_windows, parent_ppl, logits_tolerance):
    """Checks 2-4 on the reloaded model, recording values and failures in `result`."""
    import torch

    reloaded = logits(model, probe)
    if reloaded.shape != reference_logits.shape:
        result.failures.append(f"reloaded logits have shape {tuple(reloaded.shape)}, expected {tuple(reference_logits.shape)}")
    else:
        # A relative RMS, not bit-equality: reloading may pick another kernel than the one quantization
        # left in memory (GPTQModel's int4 ATen kernel rounds through bf16: ~0.5-1% here), while a
        # checkpoint that does not hold the quantized weights is off by tens of percent.
        diff = reloaded - reference_logits
        result.logits_max_abs_diff = float(diff.abs().max())
        result.logits_rel_error = float(diff.pow(2).mean().sqrt() / reference_logits.pow(2).mean().sqrt())
        if not math.isfinite(result.logits_rel_error) or result.logits_rel_error > logits_tolerance:
            result.failures.append(
                f"reloaded logits differ from the in-memory quantized model's by "
                f"{result.logits_rel_error:.3g} (relative RMS, tolerance {logits_tolerance:g}): "
                "the saved weights are not the quantized ones"
            )

    with torch.no_grad():
        prompt = probe[:, :8]
        out = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=GENERATE_TOKENS,
            do_sample=False,
        )
    result.generated_tokens = int(out.shape[1] - prompt.shape[1])
    if result.generated_tokens < 1:
        result.failures.append("the reloaded model generated no tokens")

    result.ppl_quantized = perplexity(model, eval_windows)
    result.ppl_ratio = result.ppl_quantized / parent_ppl
    if not math.isfinite(result.ppl_ratio) or result.ppl_ratio > result.max_ppl_ratio:
        result.failures.append(
            f"perplexity {result.ppl_quantized:.4g} vs parent {parent_ppl:.4g} (x{result.ppl_ratio:.3f}) "
            f"exceeds the allowed x{result.max_ppl_ratio:.3f} (--max-ppl-increase)"
        )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def linear_weight_bytes(checkpoint: str | Path, modules: list[str]) -> int:
    """Bytes stored for the weights of `modules` (packed weights, scales, zeros, indices; biases excluded)."""
    from safetensors import safe_open

    prefixes = tuple(f"{m}." for m in modules)
    total = 0
    for file in sorted(Path(checkpoint).glob("*.safetensors")):
        with safe_open(file, framework="pt") as fh:
            for key in fh.keys():
                if key.startswith(prefixes) and not key.endswith(".bias"):
                    tensor = fh.get_slice(key)
                    total += math.prod(tensor.get_shape()) * _dtype_bytes(tensor.get_dtype())
    return total


def checkpoint_bytes(checkpoint: str | Path) -> int:
    return sum(f.stat().st_size for f in Path(checkpoint).glob("*.safetensors"))


def _dtype_bytes(name: str) -> int:
    return {
        "F64": 8,
        "I64": 8,
        "U64": 8,
        "F32": 4,
        "I32": 4,
        "U32": 4,
        "F16": 2,
        "BF16": 2,
        "I16": 2,
        "U16": 2,
    }.get(name, 1)
