"""Per-sample comparison of two eval artifacts of the same tasks (backend fidelity)."""

from __future__ import annotations

import json
import math
from pathlib import Path

# Whole-document sums (loglikelihood_rolling) of hundreds of tokens: the reference adds them in float32,
# whose rounding alone is ~1e-4 at |x| ~ 5,000, so those compare relatively (1e-6) as well.
REL_TOL = 1e-6


def samples(artifact: Path) -> dict[str, list[dict]]:
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted((artifact / "samples").glob("*.jsonl"))}


def assert_same_per_sample(ours: Path, reference: Path, tolerance: float = 1e-4) -> dict[str, int]:
    """Same prompts; log-likelihoods within `tolerance` with the same greedy flags; identical generations.

    Returns how many of each were compared, so a test can check that the comparison covered something.
    """
    a, b = samples(ours), samples(reference)
    assert a.keys() == b.keys() and a, (sorted(a), sorted(b))
    counted = {"loglikelihood": 0, "generation": 0}
    for task, rows in a.items():
        assert len(rows) == len(b[task]), task
        for x, y in zip(rows, b[task], strict=True):
            assert x["doc_id"] == y["doc_id"] and x["arguments"] == y["arguments"], task
            for got, want in zip(x["resps"], y["resps"], strict=True):
                if isinstance(want[0], str):
                    assert got == want, (task, x["doc_id"])
                    counted["generation"] += 1
                elif isinstance(want[0], list):  # (loglikelihood, is_greedy)
                    assert math.isclose(got[0][0], want[0][0], rel_tol=REL_TOL, abs_tol=tolerance), (task, x["doc_id"], got, want)
                    assert got[0][1] == want[0][1], (task, x["doc_id"])
                    counted["loglikelihood"] += 1
                else:  # loglikelihood_rolling: a bare number
                    assert math.isclose(got[0], want[0], rel_tol=REL_TOL, abs_tol=tolerance), (task, x["doc_id"], got, want)
                    counted["loglikelihood"] += 1
    return counted
