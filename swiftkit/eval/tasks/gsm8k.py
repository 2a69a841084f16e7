"""GSM8K from openai/grade-school-math's jsonl (test + train as the few-shot source)."""

from __future__ import annotations

from pathlib import Path

from swiftkit.errors import DataError
from swiftkit.eval.tasks.common import lm_eval_yaml, local_task, one_file, read_jsonl, require, write_jsonl
from swiftkit.eval.tasks.registry import Benchmark, BuildContext

LAYOUT = (
    "DIR/gsm8k/test.jsonl (+ train.jsonl for few-shot; test*.jsonl / train*.jsonl accepted): "
    "openai/grade-school-math rows {question, answer ending '#### N'}"
)


def _rows(path: Path) -> list[dict]:
    rows = []
    for number, row in read_jsonl(path):
        require(path, number, row, ("question", "answer"), LAYOUT)
        if "####" not in row["answer"]:
            raise DataError(f"{path}:{number}: answer has no '#### N' final line", f"expected layout: {LAYOUT}")
        rows.append({"question": row["question"], "answer": row["answer"]})
    return rows


def build(ctx: BuildContext) -> list[str]:
    test = one_file(ctx.source, "test*.jsonl", LAYOUT)
    train = one_file(ctx.source, "train*.jsonl", LAYOUT, required=ctx.num_fewshot != 0)
    files = {"test": write_jsonl(ctx.out / "data" / "gsm8k_test.jsonl", _rows(test))}
    if train:
        files["train"] = write_jsonl(ctx.out / "data" / "gsm8k_train.jsonl", _rows(train))
    optional = {"training_split": "train", "fewshot_split": "train"}
    return [local_task(ctx.out, "gsm8k", lm_eval_yaml("gsm8k", "gsm8k.yaml"), files, optional)]


BENCHMARKS = [Benchmark("gsm8k", LAYOUT, build, "exact_match,strict-match", folder="gsm8k", marker="test*.jsonl")]
