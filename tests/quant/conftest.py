"""Quantize fixtures: each method runs once per session on the toy model, through the CLI."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.quant.scoring import answer_ppl, heldout_examples

# Small calibration (8 windows of 128 tokens of the toy's calib.txt): the toy has 4 layers of width
# 128, so this is plenty for GPTQ's Hessians and AWQ's scale search and keeps the area under budget.
CALIBRATION = ("--n-samples", "8", "--max-length", "128")


@pytest.fixture(scope="session")
def quantize(toy_model: Path, tmp_path_factory) -> Callable[..., tuple[subprocess.CompletedProcess, Path]]:
    """`quantize(method, *extra_flags)` -> (process, output dir); each distinct call runs once."""
    runs: dict[tuple[str, ...], tuple[subprocess.CompletedProcess, Path]] = {}
    root = tmp_path_factory.mktemp("quant")

    def run(method: str, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
        key = (method, *extra)
        if key not in runs:
            out = root / f"{method}-{len(runs)}"
            proc = run_cli(
                "quantize",
                "--model",
                toy_model,
                "--method",
                method,
                "--data",
                toy_model / "task" / "calib.txt",
                *CALIBRATION,
                "--output",
                out,
                *extra,
                timeout=900,
            )
            runs[key] = (proc, out)
        return runs[key]

    return run


@pytest.fixture(scope="session")
def heldout(toy_model: Path) -> list[tuple[str, str]]:
    return heldout_examples(toy_model)


@pytest.fixture(scope="session")
def parent_answer_ppl(toy_model: Path, heldout: list[tuple[str, str]]) -> float:
    return answer_ppl(toy_model, heldout)


@pytest.fixture(scope="session")
def probe_windows(toy_model: Path) -> list[list[int]]:
    """Token windows of held-out statements+answers for verify_checkpoint (its probe and perplexity text)."""
    from transformers import AutoTokenizer

    text = "".join(statement + answer for statement, answer in heldout_examples(toy_model))
    ids = AutoTokenizer.from_pretrained(toy_model)(text)["input_ids"]
    return [ids[i : i + 128] for i in range(0, min(len(ids), 512), 128)]
