"""ARC-Easy and ARC-Challenge from the ARC-V1-Feb2018 jsonl release."""

from __future__ import annotations

from pathlib import Path

from swiftkit.errors import DataError
from swiftkit.eval.tasks.common import lm_eval_yaml, local_task, one_file, read_jsonl, require, write_jsonl
from swiftkit.eval.tasks.registry import Benchmark, BuildContext

LAYOUT = (
    "DIR/arc/ARC-{Easy,Challenge}/ARC-{Easy,Challenge}-Test.jsonl (+ -Train.jsonl, -Dev.jsonl): "
    "ARC-V1-Feb2018 rows "
    "{id, question: {stem, choices: [{text, label}]}, answerKey}"
)


def _rows(path: Path) -> list[dict]:
    rows = []
    for number, row in read_jsonl(path):
        require(path, number, row, ("id", "question", "answerKey"), LAYOUT)
        question = row["question"]
        if not isinstance(question, dict) or "stem" not in question or "choices" not in question:
            raise DataError(f"{path}:{number}: question must be {{stem, choices}}", f"expected layout: {LAYOUT}")
        labels = [c["label"] for c in question["choices"]]
        if row["answerKey"] not in labels:
            raise DataError(f"{path}:{number}: answerKey {row['answerKey']!r} not among labels {labels}", f"expected layout: {LAYOUT}")
        choices = {"text": [c["text"] for c in question["choices"]], "label": labels}
        rows.append({"id": row["id"], "question": question["stem"], "answerKey": row["answerKey"], "choices": choices})
    return rows


def build(ctx: BuildContext) -> list[str]:
    task = ctx.task
    part = "ARC-Easy" if task == "arc_easy" else "ARC-Challenge"
    folder = ctx.source / part if (ctx.source / part).is_dir() else ctx.source
    files = {"test": write_jsonl(ctx.out / "data" / f"{task}_test.jsonl", _rows(one_file(folder, f"{part}-Test.jsonl", LAYOUT)))}
    for split, name in (("train", "Train"), ("validation", "Dev")):
        found = one_file(folder, f"{part}-{name}.jsonl", LAYOUT, required=False)
        if found:
            files[split] = write_jsonl(ctx.out / "data" / f"{task}_{split}.jsonl", _rows(found))
    if ctx.num_fewshot and "train" not in files:
        raise DataError(f"missing {folder}/{part}-Train.jsonl (ARC takes its few-shot examples from train)", f"expected layout: {LAYOUT}")
    optional = {"training_split": "train", "validation_split": "validation"}
    return [local_task(ctx.out, task, lm_eval_yaml("arc", f"{task}.yaml"), files, optional)]


BENCHMARKS = [
    Benchmark("arc_easy", LAYOUT, build, "acc_norm,none", loglikelihood=True, folder="arc", marker="**/ARC-Easy-Test.jsonl"),
    Benchmark("arc_challenge", LAYOUT, build, "acc_norm,none", loglikelihood=True, folder="arc", marker="**/ARC-Challenge-Test.jsonl"),
]
