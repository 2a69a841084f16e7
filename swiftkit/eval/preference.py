"""Scoring of toy_preference (lm-eval imports it from the task YAML's `process_results`)."""

from __future__ import annotations


def process_results(doc: dict, results: list[tuple[float, bool]]) -> dict[str, float]:
    """results = [(logp(chosen), greedy), (logp(rejected), greedy)] for one prompt.

    win_rate counts strict wins only (lm-eval's `acc` would count a tie as a win for choice 0).
    """
    chosen, rejected = results[0][0], results[1][0]
    return {"win_rate": float(chosen > rejected), "margin": chosen - rejected}
