"""`swiftkit quantize` end to end on the toy model: each method writes a checkpoint transformers reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiftkit.artifacts import Manifest, read_manifest
from tests.conftest import run_cli
from tests.quant.scoring import answer_ppl

# Perplexity bounds on the toy's held-out pairs, reloaded quantized vs full precision. 4-bit with
# 128-wide groups costs published 7B models about 1-5% perplexity (GPTQ/AWQ papers, QLoRA for NF4);
# the toy measured +0.0-0.2% (docs/quantize.md), so 3% leaves room for seeds without hiding a broken
# quantizer (a wrong zero point, for example, cost +30% here). int8 keeps 8 bits plus per-row
# scales: within 1%.
PPL_BOUND = {"gptq": 1.03, "awq": 1.03, "bnb-nf4": 1.03, "bnb-int8": 1.01}
# The loader each format must declare for transformers (and vLLM / SGLang) to pick the right kernel.
QUANT_CONFIG = {
    "gptq": {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": 128,
        "sym": True,
        "desc_act": False,
        "checkpoint_format": "gptq",
    },
    "awq": {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"},
    "bnb-nf4": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
    "bnb-int8": {"quant_method": "bitsandbytes", "load_in_8bit": True},
}


def manifest_of(out: Path) -> Manifest:
    found = read_manifest(out)
    assert found is not None, f"no manifest at {out}"
    return found


@pytest.mark.parametrize("method", ["gptq", "awq", "bnb-nf4", "bnb-int8"])
def test_each_method_writes_a_verified_checkpoint(method, quantize, toy_model, heldout, parent_answer_ppl):
    proc, out = quantize(method)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = manifest_of(out)
    quant = manifest.quantization
    check = quant["verification"]
    assert check["passed"] and check["reloaded"] and check["generated_tokens"] > 0

    # The checkpoint computes what the in-memory quantized model computed: bitsandbytes reloads into
    # the very same kernel (bit-equal); GPTQModel reloads GPTQ/AWQ into its int4 ATen kernel, which
    # rounds through bf16 unlike the torch kernel quantization used (measured 0.5-1% relative RMS).
    if method.startswith("bnb"):
        assert check["logits_rel_error"] == 0.0
    else:
        assert check["logits_rel_error"] <= 0.02

    # Linear weights shrink to `bits` per weight plus group scales/zeros (the parent is float32).
    weights = check["linear_weight_bytes_before"] / 4
    bits_per_weight = 8 * check["linear_weight_bytes_after"] / weights
    assert quant["bits"] <= bits_per_weight <= quant["bits"] * 1.3, bits_per_weight

    # Independently of the stage's own check: reload as a user would, score unseen text.
    ratio = answer_ppl(out, heldout) / parent_answer_ppl
    assert ratio <= PPL_BOUND[method], f"{method}: perplexity x{ratio:.4f} of full precision"

    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert {k: config.get(k) for k in QUANT_CONFIG[method]} == QUANT_CONFIG[method]

    # Everything a later stage needs came along from the parent.
    parent = manifest_of(toy_model)
    assert manifest.kind == "model" and manifest.stage == "quantize" and manifest.parents == [str(toy_model.resolve())]
    assert manifest.serving == parent.serving
    assert (out / "tokenizer.json").is_file() and (out / "chat_template.jinja").is_file()
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == json.loads((toy_model / "generation_config.json").read_text())["eos_token_id"]
    assert quant["method"] == method and quant["libraries"]["transformers"]
    calibration = quant["calibration"]
    assert calibration["sources"] == [str(toy_model / "task" / "calib.txt")] and len(calibration["fingerprint"]) == 64
    if method in ("gptq", "awq"):
        assert calibration["n_samples"] == 8 and calibration["sample_tokens"] == 128


def test_adapter_is_merged_before_quantizing(toy_model, tmp_path):
    """Quantizing an adapter artifact quantizes base+adapter, not the bare base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from swiftkit.artifacts import write_manifest
    from swiftkit.loading import load_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(toy_model, dtype=torch.float32)
    # Random A and B (not PEFT's zero-B init) so the adapter visibly changes the model.
    lora = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(toy_model).save_pretrained(adapter)
    parent = manifest_of(toy_model)
    write_manifest(
        adapter,
        Manifest(
            kind="adapter",
            stage="sft",
            parents=[str(toy_model)],
            base_model=str(toy_model),
            serving=parent.serving,
        ),
    )

    out = tmp_path / "int8"
    run_cli(
        "quantize",
        "--model",
        adapter,
        "--method",
        "bnb-int8",
        "--data",
        toy_model / "task" / "calib.txt",
        "--output",
        out,
        check=True,
        timeout=600,
    )
    assert manifest_of(out).parents == [str(adapter.resolve())]

    ids = torch.tensor([[int(t) for t in range(5, 69)]])
    with torch.no_grad():
        quantized = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, device_map="cpu")(input_ids=ids).logits
        merged = load_model(adapter)[0](input_ids=ids).logits
        bare = AutoModelForCausalLM.from_pretrained(toy_model, dtype=torch.float32)(input_ids=ids).logits
    to_merged, to_bare = (quantized - merged).abs().max(), (quantized - bare).abs().max()
    # int8 error on this random adapter's outliers is ~1 logit; dropping the adapter costs ~10.
    assert to_merged * 4 < to_bare, (float(to_merged), float(to_bare))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "gptq", "--group-size", "96"], "does not divide the input width 128"),
        (["--method", "awq", "--bits", "8"], "does not support --bits 8"),
        (["--method", "gptq", "--n-samples", "100000"], "not enough calibration text"),
        (["--method", "gptq", "--format", "compressed-tensors"], "llm-compressor"),
    ],
)
def test_impossible_requests_fail_before_any_work(flags, message, toy_model, tmp_path):
    out = tmp_path / "never"
    proc = run_cli("quantize", "--model", toy_model, "--data", toy_model / "task" / "calib.txt", *flags, "--output", out)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in " ".join(proc.stderr.split()), proc.stderr[-2000:]
    assert not out.exists() and not list(tmp_path.glob(".never*"))
