"""MMLU from hendrycks/test's CSV folders (or the header + numeric-answer export layout)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from swiftkit.errors import DataError
from swiftkit.eval.tasks.common import LETTERS, lm_eval_yaml, local_dataset, write_jsonl, write_yaml
from swiftkit.eval.tasks.registry import Benchmark, BuildContext

LAYOUT = (
    "DIR/mmlu/test/<subject>_test.csv (+ DIR/mmlu/dev/<subject>_dev.csv for few-shot): "
    "hendrycks/test CSVs without header (question,A,B,C,D,answer-letter), "
    "or with header question,choice0,choice1,choice2,choice3,answer (0-3)"
)


def _rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = [row for row in csv.reader(fh) if row]
    start = 1 if rows and [c.strip().lower() for c in rows[0][:2]] == ["question", "choice0"] else 0
    subject = path.stem.rsplit("_", 1)[0]
    docs = []
    for number, row in enumerate(rows[start:], start + 1):
        if len(row) != 6:
            raise DataError(
                f"{path}:{number}: expected 6 columns (question, 4 choices, answer), got {len(row)}",
                f"expected layout: {LAYOUT}",
            )
        answer = row[5].strip()
        index = LETTERS.index(answer) if answer in LETTERS else int(answer) if answer in ("0", "1", "2", "3") else None
        if index is None:
            raise DataError(f"{path}:{number}: answer {answer!r} is neither A-D nor 0-3", f"expected layout: {LAYOUT}")
        docs.append({"question": row[0], "subject": subject, "choices": row[1:5], "answer": index})
    if not docs:
        raise DataError(f"{path}: no rows", f"expected layout: {LAYOUT}")
    return docs


def build(ctx: BuildContext) -> list[str]:
    source, out = ctx.source, ctx.out
    tests = sorted((source / "test").glob("*_test.csv"))
    wanted = ctx.task.removeprefix("mmlu_") if ctx.task != "mmlu" else None
    if wanted:
        tests = [t for t in tests if t.stem.removesuffix("_test") == wanted]
    if not tests:
        raise DataError(f"no MMLU test files{' for ' + wanted if wanted else ''} in {source}/test", f"expected layout: {LAYOUT}")
    names = []
    for test in tests:
        subject = test.stem.removesuffix("_test")
        dev = source / "dev" / f"{subject}_dev.csv"
        files = {"test": write_jsonl(out / "data" / f"mmlu_{subject}_test.jsonl", _rows(test))}
        if dev.is_file():
            files["dev"] = write_jsonl(out / "data" / f"mmlu_{subject}_dev.jsonl", _rows(dev))
        elif ctx.num_fewshot:  # lm-eval scores these 0-shot unless --num-fewshot says otherwise
            raise DataError(f"missing {dev} (MMLU takes its few-shot examples from dev)", "add the dev CSVs or pass --num-fewshot 0")
        own = lm_eval_yaml("mmlu", "default", f"mmlu_{subject}.yaml")
        config: dict[str, Any] = {"task": f"mmlu_{subject}", "include": str(own)}
        if not own.is_file():  # a subject lm-eval does not know: same template, same description wording
            config = {
                "task": f"mmlu_{subject}",
                "include": str(lm_eval_yaml("mmlu", "default", "_default_template_yaml")),
                "description": f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n",
            }
        names.append(write_yaml(out, f"mmlu_{subject}", {**config, "tag": [], **local_dataset(files, {"fewshot_split": "dev"})}))
    if wanted:
        return names
    metrics = [{"metric": "acc", "weight_by_size": True}]
    group = {"group": "mmlu", "task": names, "aggregate_metric_list": metrics, "metadata": {"version": 2}}
    return [write_yaml(out, "mmlu", group)]


BENCHMARKS = [
    Benchmark("mmlu", LAYOUT, build, "acc,none", loglikelihood=True, subtasks="mmlu_", folder="mmlu", marker="test/*_test.csv"),
]
