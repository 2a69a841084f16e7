"""HumanEval (pass@1, greedy), scored in swiftkit's sandbox instead of lm-eval's code_eval."""

from __future__ import annotations

from typing import Any

from swiftkit.eval.tasks.common import FunctionRef, local_dataset, one_file, read_jsonl, require, write_jsonl, write_yaml
from swiftkit.eval.tasks.registry import Benchmark, BuildContext

LAYOUT = (
    "DIR/humaneval/HumanEval.jsonl.gz (or HumanEval.jsonl): "
    "openai/human-eval rows {task_id, prompt, entry_point, canonical_solution, test}"
)


def build(ctx: BuildContext) -> list[str]:
    path = one_file(ctx.source, "HumanEval.jsonl.gz", LAYOUT, required=False) or one_file(ctx.source, "HumanEval.jsonl", LAYOUT)
    rows = []
    for number, row in read_jsonl(path):
        require(path, number, row, ("task_id", "prompt", "entry_point", "test"), LAYOUT)
        rows.append(row)
    files = {"test": write_jsonl(ctx.out / "data" / "humaneval_test.jsonl", rows)}
    return [write_yaml(ctx.out, "humaneval", config(files))]


def config(files: dict[str, str] | None) -> dict[str, Any]:
    """lm-eval's humaneval task with the scorer swapped for swiftkit's sandbox.

    Not an `include` of lm-eval's file: resolving it imports its utils, which fetch the `code_eval`
    metric from the hub at import time (fails offline) and run the code in-process threads.
    """
    dataset = local_dataset(files) if files else {"dataset_path": "openai/openai_humaneval"}
    return {
        "task": "humaneval",
        **dataset,
        "unsafe_code": True,
        "output_type": "generate_until",
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
        "doc_to_target": "{{test}}\ncheck({{entry_point}})",
        "process_results": FunctionRef("swiftkit.eval.sandbox.process_humaneval"),
        "metric_list": [{"metric": "pass@1", "aggregation": "mean", "higher_is_better": True}],
        "generation_kwargs": {"until": ["\nclass", "\ndef", "\n#", "\nif", "\nprint"], "max_gen_toks": 1024, "do_sample": False},
        "repeats": 1,
        "num_fewshot": 0,
        "metadata": {"version": 1.0},
    }


BENCHMARKS = [
    Benchmark("humaneval", LAYOUT, build, "pass@1,none", folder="humaneval", marker="HumanEval.jsonl*", runs_code=True,
              hub_config=lambda: config(None)),
]
