"""Careless and hostile CLI input (issue 14): each is one `error:` line with exit 2, never "internal error"
(exit 1), and writes nothing at --output."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import WIDE, assert_one_line_error, run_cli

# Bytes that are neither UTF-8 nor YAML/JSON (what a wrong file or a binary download looks like).
BINARY = bytes(range(128, 256)) * 8


@pytest.mark.parametrize("command", ["sft", "quantize", "eval"])
def test_truncated_safetensors_model_is_one_line(toy_model, tmp_path, command):
    """Before: internal error: SafetensorError: Error while deserializing header: invalid header length."""
    model = tmp_path / "model"
    shutil.copytree(toy_model, model, ignore=shutil.ignore_patterns("task"))
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted download
    out = tmp_path / "out"
    args = {
        "sft": ["--data", f"{toy_model}/task/sft.jsonl#40"],
        "quantize": ["--method", "bnb-int8", "--data", f"{toy_model}/task/calib.txt"],
        "eval": ["--tasks", "toy_arithmetic", "--data-dir", f"{toy_model}/task", "--limit", "2"],
    }[command]
    proc = run_cli(command, "--model", model, *args, "--output", out, env=WIDE)
    assert_one_line_error(proc, f"{weights}: not a readable safetensors file")
    assert not out.exists()


@pytest.mark.parametrize("where", ["data.jsonl", "data.json", "template", "config", "recipe"])
def test_binary_file_is_one_line(toy_model, tmp_path, where):
    """Before: internal error: UnicodeDecodeError: 'utf-8' codec can't decode byte 0x80."""
    out = tmp_path / "out"
    if where.startswith("data"):
        data = tmp_path / where
        data.write_bytes(BINARY)
        proc = run_cli("sft", "--model", toy_model, "--data", data, "--output", out, env=WIDE)
        assert_one_line_error(proc, f"{where}: not UTF-8 text")
    elif where == "template":
        template = tmp_path / "chat.jinja"
        template.write_bytes(BINARY)
        data = f"{toy_model}/task/sft.jsonl#40"
        proc = run_cli("sft", "--model", toy_model, "--data", data, "--template", template, "--output", out, env=WIDE)
        assert_one_line_error(proc, f"--template {template}: not a UTF-8 text file")
    else:
        file = tmp_path / f"{where}.yaml"
        file.write_bytes(BINARY)
        proc = run_cli("sft", "--config", file, env=WIDE) if where == "config" else run_cli("run", file, env=WIDE)
        assert_one_line_error(proc, f"{file} is not a UTF-8 text file")
    assert not out.exists()


@pytest.mark.parametrize(
    "command, flags, named",
    [
        ("sft", "--lr -1", "--lr: Input should be greater than 0"),
        ("sft", "--batch-size 0", "--batch-size: Input should be greater than or equal to 1"),
        ("dpo", "--batch-size 0", "--batch-size: Input should be greater than or equal to 1"),
        ("sft", "--max-steps -5 --epochs 0", "--max-steps"),
        ("sft", "--max-steps -1 --epochs 0", "nothing to train"),
        ("sft", "--eval-split 1.5", "--eval-split: Input should be less than 1"),
        ("sft", "--grad-accum 0", "--grad-accum"),
        ("serve", "--port 99999", "--port: Input should be less than or equal to 65535"),
    ],
    ids=["lr", "batch-size", "dpo-batch-size", "max-steps", "zero-steps", "eval-split", "grad-accum", "port"],
)
def test_bad_flag_values_are_refused_by_the_config(toy_model, tmp_path, command, flags, named):
    """Before: internal errors from deep inside torch/uvicorn, or (--max-steps -5 --epochs 0) a 0-step adapter."""
    out = tmp_path / "out"
    data = ["--data", f"{toy_model}/task/sft.jsonl#40", "--output", str(out)] if command != "serve" else []
    proc = run_cli(command, "--model", toy_model, *data, *flags.split(), env=WIDE)
    assert_one_line_error(proc, named)
    assert not out.exists()


def test_adapter_naming_itself_as_base_is_one_line(tmp_path):
    """Before: internal error: RecursionError (resolve_model_ref followed base_model forever)."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    manifest = {"schema_version": 1, "kind": "adapter", "stage": "sft", "base_model": str(adapter)}
    (adapter / "swiftkit.json").write_text(json.dumps(manifest))
    out = tmp_path / "out"
    assert_one_line_error(run_cli("merge", "--model", adapter, "--output", out, env=WIDE), str(adapter))
    assert not out.exists()
