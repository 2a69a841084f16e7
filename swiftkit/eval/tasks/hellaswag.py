"""HellaSwag from rowanz/hellaswag's jsonl."""

from __future__ import annotations

from pathlib import Path

from swiftkit.errors import DataError
from swiftkit.eval.tasks.common import lm_eval_yaml, local_task, one_file, read_jsonl, require, write_jsonl
from swiftkit.eval.tasks.registry import Benchmark, BuildContext

LAYOUT = (
    "DIR/hellaswag/hellaswag_val.jsonl (+ hellaswag_train.jsonl for few-shot): "
    "rowanz/hellaswag rows {activity_label, ctx_a, ctx_b, endings, label}"
)


def _rows(path: Path) -> list[dict]:
    rows = []
    for number, row in read_jsonl(path):
        require(path, number, row, ("activity_label", "ctx_a", "ctx_b", "endings", "label"), LAYOUT)
        if not isinstance(row["endings"], list) or len(row["endings"]) != 4:
            raise DataError(f"{path}:{number}: endings must be a list of 4", f"expected layout: {LAYOUT}")
        rows.append({**row, "label": str(row["label"])})  # the hub copy stores label as a string
    return rows


def build(ctx: BuildContext) -> list[str]:
    val = one_file(ctx.source, "hellaswag_val.jsonl", LAYOUT)
    files = {"validation": write_jsonl(ctx.out / "data" / "hellaswag_validation.jsonl", _rows(val))}
    train = one_file(ctx.source, "hellaswag_train.jsonl", LAYOUT, required=bool(ctx.num_fewshot))
    if train:
        files["train"] = write_jsonl(ctx.out / "data" / "hellaswag_train.jsonl", _rows(train))
    return [local_task(ctx.out, "hellaswag", lm_eval_yaml("hellaswag", "hellaswag.yaml"), files, {"training_split": "train"})]


BENCHMARKS = [
    Benchmark("hellaswag", LAYOUT, build, "acc_norm,none", loglikelihood=True, folder="hellaswag", marker="hellaswag_val.jsonl"),
]
