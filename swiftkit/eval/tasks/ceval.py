"""C-Eval (lm-eval's ceval-valid: the val split, since test has no answers) from the ceval-exam CSVs."""

from __future__ import annotations

from swiftkit.errors import DataError
from swiftkit.eval.tasks.common import lm_eval_yaml
from swiftkit.eval.tasks.csv_subjects import subject_tasks
from swiftkit.eval.tasks.registry import Benchmark, BuildContext

LAYOUT = (
    "DIR/ceval/val/<subject>_val.csv (+ dev/<subject>_dev.csv): ceval-exam release CSVs "
    "with header id,question,A,B,C,D,answer[,explanation]"
)


def build(ctx: BuildContext) -> list[str]:
    vals = sorted((ctx.source / "val").glob("*_val.csv"))
    wanted = ctx.task.removeprefix("ceval-valid_") if ctx.task.startswith("ceval-valid_") else None
    if wanted:
        vals = [v for v in vals if v.stem.removesuffix("_val") == wanted]
    if not vals:
        raise DataError(f"no C-Eval val files in {ctx.source}/val", f"expected layout: {LAYOUT}")
    subjects = [(v.stem.removesuffix("_val"), v, ctx.source / "dev" / f"{v.stem.removesuffix('_val')}_dev.csv", ("question", "answer"))
                for v in vals]
    return subject_tasks(ctx.out, "ceval-valid", "C-Eval", LAYOUT, wanted, 2, subjects, split="val",
                         own_yaml=lambda subject: lm_eval_yaml("ceval", f"ceval-valid_{subject}.yaml"), fewshot=ctx.num_fewshot)


BENCHMARKS = [
    Benchmark("ceval-valid", LAYOUT, build, "acc,none", loglikelihood=True, subtasks="ceval-valid_", aliases=("ceval",),
              folder="ceval", marker="val/*_val.csv"),
]
