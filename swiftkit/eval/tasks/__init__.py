"""Which tasks an eval runs, and where their data comes from: one module per benchmark family.

lm-evaluation-harness owns the prompts, few-shot handling, answer extraction and metrics. swiftkit
adds two things here:

* offline data: `--data-dir` copies of a benchmark in its ORIGINAL release layout (MMLU's CSV
  folders, GSM8K's jsonl, ...) are validated row by row, converted to the schema of the hub
  dataset lm-eval's task reads, and served to lm-eval through a generated task YAML that
  `include`s lm-eval's own task file and swaps only the dataset. Prompts and metrics stay
  lm-eval's, so scores match a hub run on the same rows.
* swiftkit's own tasks for the toy model (toy_comparison, toy_preference) and for any jsonl of
  question/answer or multiple-choice rows (jsonl_qa, jsonl_choice), written as lm-eval YAML too.

Each family is a module here with a `BENCHMARKS` list (registry.py finds them); plan.py turns the
names of a run into task YAMLs. The generated YAMLs and converted data are kept in the eval
artifact (`tasks/`), so a run can be repeated with plain `lm_eval --include_path`. Light package:
no torch import.
"""

from swiftkit.eval.tasks.plan import TaskPlan, known_offline, plan_tasks, surely_unknown
from swiftkit.eval.tasks.registry import Benchmark, BuildContext, benchmarks

__all__ = ["Benchmark", "BuildContext", "TaskPlan", "benchmarks", "known_offline", "plan_tasks", "surely_unknown"]
