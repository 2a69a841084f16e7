"""Your own rows, one --data FILE.jsonl per run: question/answer exact match or multiple choice."""

from __future__ import annotations

from pathlib import Path

from swiftkit.errors import DataError
from swiftkit.eval.tasks.common import local_dataset, read_jsonl, write_jsonl, write_yaml
from swiftkit.eval.tasks.registry import Benchmark, BuildContext
from swiftkit.eval.tasks.toy import QA_LAYOUT, qa_task

CHOICE_LAYOUT = "jsonl rows {question, choices: [text, ...], answer: index, letter or the right choice's text}"


def _choice_rows(path: Path) -> list[dict]:
    rows = []
    for number, row in read_jsonl(path):
        question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
        if not isinstance(question, str) or not isinstance(choices, list) or len(choices) < 2:
            raise DataError(f"{path}:{number}: needs a string 'question' and a list of 2+ 'choices'", f"expected layout: {CHOICE_LAYOUT}")
        choices = [str(c) for c in choices]
        letters = [chr(ord("A") + i) for i in range(len(choices))]
        if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
            index = answer
        elif str(answer) in choices:
            index = choices.index(str(answer))
        elif str(answer) in letters:
            index = letters.index(str(answer))
        else:
            raise DataError(
                f"{path}:{number}: answer {answer!r} is not an index, letter or one of the choices", f"expected layout: {CHOICE_LAYOUT}"
            )
        rows.append({"question": question, "choices": choices, "answer": index})
    if not rows:
        raise DataError(f"{path}: no rows", f"expected layout: {CHOICE_LAYOUT}")
    return rows


def choice_task(ctx: BuildContext) -> list[str]:
    """Multiple choice by log-likelihood of each choice after the question (acc and acc_norm)."""
    files = {"test": write_jsonl(ctx.out / "data" / "jsonl_choice.jsonl", _choice_rows(ctx.source))}
    config = {
        "task": "jsonl_choice",
        **local_dataset(files),
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "choices",
        "doc_to_target": "answer",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "num_fewshot": 0,
        "metadata": {"version": 1.0},
    }
    return [write_yaml(ctx.out, "jsonl_choice", config)]


BENCHMARKS = [
    Benchmark("jsonl_qa", QA_LAYOUT, qa_task, "exact_match,strict", needs_data=True),
    Benchmark("jsonl_choice", CHOICE_LAYOUT, choice_task, "acc,none", loglikelihood=True, needs_data=True),
]
