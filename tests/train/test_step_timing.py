"""Per-step timing in sft and dpo manifests: steady-state tokens/s after warm-up, consistent with the counts."""

from __future__ import annotations

import math

import pytest
import torch

from tests.train.conftest import manifest


@pytest.mark.parametrize("adapter", ["sft_adapter", "dpo_adapter"])
def test_steady_tokens_per_second_is_recorded_and_consistent(adapter, request):
    m = manifest(request.getfixturevalue(adapter))["metrics"]
    steps = m["steps"]
    # Warm-up: the first 10 % of the steps, at least 5 (the session runs have 150 and 30 steps).
    assert m["warmup_steps"] == max(5, math.ceil(0.1 * steps)) and m["steady_steps"] == steps - m["warmup_steps"]
    assert 0 < m["steady_tokens"] < m["train_tokens"]
    assert 0 < m["steady_s"] < m["train_runtime_s"] and m["warmup_s"] > 0
    assert m["steady_tokens_per_second"] == pytest.approx(m["steady_tokens"] / m["steady_s"], rel=1e-4)
    assert m["tokens_per_second"] == pytest.approx(m["train_tokens"] / m["train_runtime_s"], rel=1e-3)
    # Steady steps see about the same tokens per step as the whole run (rows of similar length here).
    per_step = m["train_tokens"] / steps
    assert 0.7 * per_step < m["steady_tokens"] / m["steady_steps"] < 1.3 * per_step, m
    # Peak GPU memory is recorded where there is a GPU, and only there.
    assert ("peak_memory_gib" in m) == torch.cuda.is_available()
