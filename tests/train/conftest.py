"""Training fixtures: one LoRA SFT adapter and one DPO adapter on it, built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiftkit.artifacts import read_manifest
from tests.conftest import run_cli

# Tuned on the toy (see docs/sft.md): enough to move held-out loss and answers clearly, small enough for CI.
SFT_STEPS, SFT_LR, SFT_ROWS = 60, "3e-3", 600
DPO_STEPS, DPO_ROWS = 30, 300


def manifest(path: Path) -> dict:
    found = read_manifest(path)
    assert found is not None, f"no manifest at {path}"
    return json.loads(found.model_dump_json(exclude_none=True))


@pytest.fixture(scope="session")
def train_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture(scope="session")
def sft_adapter(toy_model: Path, train_dir: Path) -> Path:
    out = train_dir / "sft-lora"
    run_cli(
        "sft",
        "--model",
        toy_model,
        "--data",
        f"{toy_model}/task/sft.jsonl#{SFT_ROWS}",
        "--max-steps",
        SFT_STEPS,
        "--lr",
        SFT_LR,
        "--batch-size",
        8,
        "--eval-split",
        "0.1",
        "--logging-steps",
        10,
        "--output",
        out,
        check=True,
    )
    return out


@pytest.fixture(scope="session")
def dpo_adapter(toy_model: Path, sft_adapter: Path, train_dir: Path) -> Path:
    out = train_dir / "dpo"
    run_cli(
        "dpo",
        "--model",
        sft_adapter,
        "--data",
        f"{toy_model}/task/dpo.jsonl#{DPO_ROWS}",
        "--max-steps",
        DPO_STEPS,
        "--lr",
        "1e-3",
        "--beta",
        "0.1",
        "--batch-size",
        8,
        "--eval-split",
        "0.2",
        "--output",
        out,
        check=True,
    )
    return out
