"""CMMLU from haonan-li/CMMLU's data/ CSVs."""

from __future__ import annotations

from swiftkit.errors import DataError
from swiftkit.eval.tasks.common import lm_eval_yaml
from swiftkit.eval.tasks.csv_subjects import subject_tasks
from swiftkit.eval.tasks.registry import Benchmark, BuildContext

LAYOUT = "DIR/cmmlu/test/<subject>.csv (+ dev/<subject>.csv): haonan-li/CMMLU data/ CSVs with header ,Question,A,B,C,D,Answer"


def build(ctx: BuildContext) -> list[str]:
    tests = sorted((ctx.source / "test").glob("*.csv"))
    wanted = ctx.task.removeprefix("cmmlu_") if ctx.task != "cmmlu" else None
    if wanted:
        tests = [t for t in tests if t.stem == wanted]
    if not tests:
        raise DataError(f"no CMMLU test files{' for ' + wanted if wanted else ''} in {ctx.source}/test", f"expected layout: {LAYOUT}")
    subjects = [(t.stem, t, ctx.source / "dev" / f"{t.stem}.csv", ("Question", "Answer")) for t in tests]
    return subject_tasks(ctx.out, "cmmlu", "CMMLU", LAYOUT, wanted, 1, subjects, split="test",
                         own_yaml=lambda subject: lm_eval_yaml("cmmlu", f"cmmlu_{subject}.yaml"), fewshot=ctx.num_fewshot)


BENCHMARKS = [
    Benchmark("cmmlu", LAYOUT, build, "acc,none", loglikelihood=True, subtasks="cmmlu_", folder="cmmlu", marker="test/*.csv"),
]
