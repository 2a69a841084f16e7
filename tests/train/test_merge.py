"""swiftkit merge: the chain toy -> sft -> dpo folds into a model equal to base+adapters, with lineage."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from swiftkit.artifacts import Manifest, write_manifest
from swiftkit.loading import load_model
from tests.conftest import run_cli
from tests.train.conftest import manifest


@pytest.fixture(scope="module")
def merged(dpo_adapter, train_dir):
    out = train_dir / "merged"
    run_cli("merge", "--model", dpo_adapter, "--output", out, check=True)
    return out


def test_merged_model_equals_base_plus_adapter_chain(toy_model, dpo_adapter, merged):
    m = manifest(merged)
    assert m["kind"] == "model" and m["stage"] == "merge" and m["parents"] == [str(dpo_adapter)]
    assert m["metrics"]["max_logit_diff"] <= 1e-4 and m["metrics"]["adapters_merged"] == 2
    # Independently of merge's own check: the merged artifact vs the chain applied at load time.
    chained, tokenizer, _ = load_model(dpo_adapter)
    plain, merged_tokenizer, _ = load_model(merged)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 23 + 58?"}], tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        assert torch.allclose(chained(**ids).logits, plain(**ids).logits, atol=1e-4)
    # Dtype, tokenizer, chat template, generation config and eos intact.
    base_config = json.loads((toy_model / "config.json").read_text())
    assert json.loads((merged / "config.json").read_text()).get("dtype") == base_config.get("dtype")
    assert merged_tokenizer.chat_template == tokenizer.chat_template and merged_tokenizer.eos_token == tokenizer.eos_token
    base_gen = json.loads((toy_model / "generation_config.json").read_text())
    merged_gen = json.loads((merged / "generation_config.json").read_text())
    assert merged_gen["eos_token_id"] == base_gen["eos_token_id"]
    assert m["serving"]["eos_token_ids"] == manifest(toy_model)["serving"]["eos_token_ids"]


def test_info_shows_the_lineage_back_to_the_toy(toy_model, sft_adapter, dpo_adapter, merged):
    proc = run_cli("info", merged, "--json-output", check=True)
    records = json.loads(proc.stdout)
    assert [r["path"] for r in records] == [str(merged), str(dpo_adapter), str(sft_adapter), str(toy_model.resolve())]
    assert [r["manifest"]["stage"] for r in records] == ["merge", "dpo", "sft", "toy"]


def test_refuses_to_merge_into_a_quantized_base(toy_model, sft_adapter, tmp_path):
    base = tmp_path / "base-gptq"
    shutil.copytree(toy_model, base, ignore=shutil.ignore_patterns("task"))
    write_manifest(
        base,
        Manifest(
            kind="model",
            stage="quantize",
            parents=[str(toy_model)],
            quantization={"method": "gptq", "bits": 4},
        ),
    )
    adapter = tmp_path / "adapter"
    shutil.copytree(sft_adapter, adapter)
    m = Manifest.model_validate(manifest(sft_adapter) | {"base_model": str(base), "parents": [str(base)]})
    write_manifest(adapter, m)
    out = tmp_path / "merged"
    proc = run_cli("merge", "--model", adapter, "--output", out)
    assert proc.returncode == 2
    assert "refusing to merge into quantized weights (gptq)" in proc.stderr and "--dequantize" in proc.stderr
    assert not out.exists()
    nothing = run_cli("merge", "--model", toy_model, "--output", out)
    assert nothing.returncode == 2 and "nothing to merge" in nothing.stderr
