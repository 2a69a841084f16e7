"""swiftkit sft on the toy: LoRA, QLoRA and full fine-tuning learn the held-out task."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.train.conftest import manifest
from tests.train.heldout import heldout_scores

# Stated margins: held-out eval loss must fall by at least this fraction, and the mean log-prob of the
# correct answer to unseen questions must rise by at least this many nats over the base model.
LOSS_DROP = 0.3
LOGP_GAIN = 1.0
EXACT_GAIN = 0.25  # greedy exact match on held-out questions, absolute


@pytest.fixture(scope="module")
def base_scores(toy_model: Path) -> dict[str, float]:
    return heldout_scores(toy_model, toy_model)


def check_learned(out: Path, toy_model: Path, base_scores: dict[str, float], min_exact_gain: float = 0.0) -> dict:
    m = manifest(out)
    metrics = m["metrics"]
    assert metrics["eval_loss_after"] < (1 - LOSS_DROP) * metrics["eval_loss_before"], metrics
    scores = heldout_scores(out, toy_model)
    assert scores["answer_logp"] > base_scores["answer_logp"] + LOGP_GAIN, (scores, base_scores)
    assert scores["exact_match"] >= base_scores["exact_match"] + min_exact_gain, (scores, base_scores)
    return m


def test_lora_sft_learns_the_heldout_task(toy_model, sft_adapter, base_scores):
    # The session adapter trains long enough to answer unseen questions right, not only to move the loss.
    m = check_learned(sft_adapter, toy_model, base_scores, min_exact_gain=EXACT_GAIN)
    assert m["kind"] == "adapter" and m["stage"] == "sft"
    assert m["base_model"] == str(toy_model.resolve()) and m["parents"] == [str(toy_model.resolve())] and m["adapter_chain"] == []
    assert m["data"]["rows"] > 0 and len(m["data"]["fingerprint"]) == 64
    assert m["metrics"]["loss_on"] == "assistant" and m["metrics"]["tokens_per_second"] > 0
    assert "{% generation %}" in m["serving"]["chat_template"]
    files = {p.name for p in sft_adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "swiftkit.json"} <= files
    assert "checkpoints" not in files  # resumable state does not ship in the artifact


SHORT_RUN = "--max-steps 40 --batch-size 8 --eval-split 0.1"


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_qlora_sft_learns(toy_model, train_dir, base_scores):
    out = train_dir / "sft-qlora"
    data = f"{toy_model}/task/sft.jsonl#400"
    run_cli(
        "sft", "--model", toy_model, "--method", "qlora", "--data", data, "--lr", "3e-3", *SHORT_RUN.split(), "--output", out, check=True
    )
    m = check_learned(out, toy_model, base_scores)
    assert m["kind"] == "adapter" and m["config"]["method"] == "qlora"


def test_full_sft_writes_a_model_that_learned(toy_model, train_dir, base_scores):
    out = train_dir / "sft-full"
    data = f"{toy_model}/task/sft.jsonl#400"
    run_cli(
        "sft", "--model", toy_model, "--method", "full", "--data", data, "--lr", "5e-4", *SHORT_RUN.split(), "--output", out, check=True
    )
    m = check_learned(out, toy_model, base_scores)
    assert m["kind"] == "model" and m["parents"] == [str(toy_model.resolve())] and "base_model" not in m
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()


def test_template_override_without_generation_markers(toy_model, tmp_path):
    # A plain ChatML template (no {% generation %}): loss falls back to the last reply, and the adapter
    # ships the template it trained with.
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    (tmp_path / "chatml.jinja").write_text(template)
    out = tmp_path / "out"
    data = f"{toy_model}/task/sft.jsonl#16"
    flags = "--max-steps 2 --eval-split 0"
    proc = run_cli(
        "sft", "--model", toy_model, "--data", data, "--template", tmp_path / "chatml.jinja", *flags.split(), "--output", out, check=True
    )
    assert "no {% generation %} markers" in " ".join(proc.stderr.split())
    m = manifest(out)
    assert m["metrics"]["loss_on"] == "completion" and m["serving"]["chat_template"] == template
    assert (out / "chat_template.jinja").read_text() == template
