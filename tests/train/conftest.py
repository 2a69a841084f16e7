"""Training fixtures: one LoRA SFT adapter and one DPO adapter on it, built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiftkit.artifacts import read_manifest
from tests.conftest import run_cli

# Measured on the toy (see the report in docs/sft.md): 150 LoRA steps at lr 3e-3 take held-out greedy
# exact match from 0 to about half; DPO then sharpens the preference for the right answer.
SFT_ARGS = "--max-steps 150 --lr 3e-3 --batch-size 8 --eval-split 0.1 --logging-steps 10"
DPO_ARGS = "--max-steps 30 --lr 1e-3 --beta 0.1 --batch-size 8"


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
    data = f"{toy_model}/task/sft.jsonl#1200"
    run_cli("sft", "--model", toy_model, "--data", data, *SFT_ARGS.split(), "--output", out, check=True)
    return out


@pytest.fixture(scope="session")
def dpo_adapter(toy_model: Path, sft_adapter: Path, train_dir: Path) -> Path:
    out = train_dir / "dpo"
    data, held = f"{toy_model}/task/dpo.jsonl#240", f"{toy_model}/task/heldout_pref.jsonl#96"
    run_cli("dpo", "--model", sft_adapter, "--data", data, "--eval-data", held, *DPO_ARGS.split(), "--output", out, check=True)
    return out
