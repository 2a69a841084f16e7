"""The toy model's own tasks: comparison (exact match of generated answers) and preference win rate.

`toy_comparison` asks the toy's skill ("What is the larger of 78 and 32?") and scores the whole
generated answer by exact match; `toy_arithmetic` is its old name, kept so recipes, gates and earlier
artifacts keep working (a run reports the task under the name it was asked for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from swiftkit.errors import DataError
from swiftkit.eval.tasks.common import FunctionRef, local_dataset, read_jsonl, require, write_jsonl, write_yaml
from swiftkit.eval.tasks.registry import Benchmark, BuildContext

QA_LAYOUT = "jsonl rows {question, answer} (the toy artifact's task/heldout.jsonl)"
PREF_LAYOUT = (
    "jsonl rows {prompt: [{role: user, content}], chosen: [{role: assistant, content}], rejected: [...]} "
    "(the toy artifact's task/dpo.jsonl)"
)


def qa_rows(path: Path, layout: str) -> list[dict]:
    rows = []
    for number, row in read_jsonl(path):
        question, answer = row.get("question", row.get("prompt")), row.get("answer", row.get("target"))
        if not isinstance(question, str) or answer is None:
            raise DataError(
                f"{path}:{number}: needs string 'question' (or 'prompt') and 'answer' (or 'target')", f"expected layout: {layout}"
            )
        rows.append({"question": question, "answer": str(answer).strip()})
    if not rows:
        raise DataError(f"{path}: no rows", f"expected layout: {layout}")
    return rows


def qa_task(ctx: BuildContext, layout: str = QA_LAYOUT) -> list[str]:
    """Greedy generation scored by exact match of the whole (stripped) answer."""
    name = ctx.task
    files = {"test": write_jsonl(ctx.out / "data" / f"{name}.jsonl", qa_rows(ctx.source, layout))}
    strict = [{"function": "regex", "regex_pattern": r"^\s*(\S+?)\s*$"}, {"function": "take_first"}]
    config: dict[str, Any] = {
        "task": name,
        **local_dataset(files),
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "{{question}}",
        "doc_to_target": "{{answer}}",
        "target_delimiter": " ",
        # A fixed stop set: end of turn (chat), end of line (plain prompts).
        "generation_kwargs": {"until": ["\n", "<|im_end|>", "<|endoftext|>"], "max_gen_toks": ctx.max_gen_toks or 8, "do_sample": False},
        "filter_list": [{"name": "strict", "filter": strict}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "num_fewshot": 0,
        "metadata": {"version": 1.0},
    }
    return [write_yaml(ctx.out, name, config)]


def _content(path: Path, number: int, value: Any, role: str) -> str:
    """The text of a one-message list (or a plain string): multi-turn prompts are not scored here."""
    if isinstance(value, str):
        return value
    turns = [m for m in value if isinstance(m, dict) and m.get("role") != "system"] if isinstance(value, list) else []
    if len(turns) != 1 or turns[0].get("role") != role or not isinstance(turns[0].get("content"), str):
        raise DataError(f"{path}:{number}: expected one {role} message", f"expected layout: {PREF_LAYOUT}")
    return turns[0]["content"]


def _preference_rows(path: Path) -> list[dict]:
    rows = []
    for number, row in read_jsonl(path):
        require(path, number, row, ("prompt", "chosen", "rejected"), PREF_LAYOUT)
        roles = {"prompt": "user", "chosen": "assistant", "rejected": "assistant"}
        rows.append({key: _content(path, number, row[key], role) for key, role in roles.items()})
    if not rows:
        raise DataError(f"{path}: no rows", f"expected layout: {PREF_LAYOUT}")
    return rows


def preference_task(ctx: BuildContext) -> list[str]:
    """logp(chosen) vs logp(rejected) after the prompt: win rate and mean margin (nats).

    The continuation includes the end-of-turn text the chat template closes an answer with, as DPO
    training scores it, so "8" can never win against "82" by stopping early.
    """
    end = ctx.end_of_turn
    rows = [{**r, "choices": [r["chosen"] + end, r["rejected"] + end]} for r in _preference_rows(ctx.source)]
    files = {"test": write_jsonl(ctx.out / "data" / "toy_preference.jsonl", rows)}
    config = {
        "task": "toy_preference",
        **local_dataset(files),
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
        "doc_to_choice": "choices",
        "doc_to_target": 0,
        "process_results": FunctionRef("swiftkit.eval.preference.process_results"),
        "metric_list": [
            {"metric": "win_rate", "aggregation": "mean", "higher_is_better": True},
            {"metric": "margin", "aggregation": "mean", "higher_is_better": True},
        ],
        "num_fewshot": 0,
        "metadata": {"version": 1.0},
    }
    return [write_yaml(ctx.out, "toy_preference", config)]


_COMPARISON = {"layout": QA_LAYOUT, "build": qa_task, "metric": "exact_match,strict", "own_files": ("heldout.jsonl",)}
BENCHMARKS = [
    Benchmark("toy_comparison", **_COMPARISON),
    Benchmark("toy_arithmetic", **_COMPARISON),  # the old name of toy_comparison
    # Held-out pairs when the toy has them; dpo.jsonl is DPO's own training data (recall, not generalisation).
    Benchmark("toy_preference", PREF_LAYOUT, preference_task, "win_rate,none", loglikelihood=True,
              own_files=("heldout_pref.jsonl", "dpo.jsonl"), data_override=False),
]
