"""The benchmark registry: a family is one module of swiftkit/eval/tasks/ with a BENCHMARKS list."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

import swiftkit.eval.tasks as tasks
from swiftkit.errors import DataError
from swiftkit.eval.tasks import registry

NEW_FAMILY = '''
"""A new benchmark family in one file: rows {q, a} under DIR/tiny_qa/test.jsonl."""

from swiftkit.eval.tasks.common import local_dataset, read_jsonl, require, write_jsonl, write_yaml
from swiftkit.eval.tasks.registry import Benchmark

LAYOUT = "DIR/tiny_qa/test.jsonl: rows {q, a}"


def build(ctx):
    rows = []
    for number, row in read_jsonl(ctx.source / "test.jsonl"):
        require(ctx.source / "test.jsonl", number, row, ("q", "a"), LAYOUT)
        rows.append({"question": row["q"], "answer": row["a"]})
    files = {"test": write_jsonl(ctx.out / "data" / "tiny_qa.jsonl", rows)}
    return [write_yaml(ctx.out, "tiny_qa", {
        "task": "tiny_qa", **local_dataset(files), "output_type": "generate_until", "test_split": "test",
        "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "exact_match"}],
    })]


BENCHMARKS = [Benchmark("tiny_qa", LAYOUT, build, "exact_match,none", aliases=("tinyqa",), folder="tiny_qa", marker="test.jsonl")]
'''


@pytest.fixture
def new_family(tmp_path, monkeypatch):
    """The module dropped into the package's search path; nothing else is told about it."""
    extra = tmp_path / "more_tasks"
    extra.mkdir()
    (extra / "tiny_qa.py").write_text(textwrap.dedent(NEW_FAMILY))
    monkeypatch.setattr(tasks, "__path__", [*tasks.__path__, str(extra)])
    registry.refresh()
    yield
    sys.modules.pop("swiftkit.eval.tasks.tiny_qa", None)
    registry.refresh()


def test_a_new_benchmark_module_is_picked_up(new_family, tmp_path):
    from lm_eval.tasks import TaskManager

    assert {"tiny_qa", "tinyqa"} <= set(tasks.known_offline())
    data = tmp_path / "data" / "tiny_qa"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text("".join(json.dumps({"q": f"{i} + 1 =", "a": str(i + 1)}) + "\n" for i in range(3)))
    plan = tasks.plan_tasks(["tinyqa"], tmp_path / "out", data_dir=str(tmp_path / "data"))  # found by its alias
    assert plan.names == ["tiny_qa"] and plan.primary == {"tiny_qa": "exact_match,none"} and plan.offline
    assert plan.sources["tiny_qa"] == str(data.resolve())
    # lm-eval builds the task from the generated YAML, with the converted rows
    manager = TaskManager(include_path=str(plan.include_dir), include_defaults=False)
    task = manager.load(["tiny_qa"])["tasks"]["tiny_qa"]
    assert [task.doc_to_target(doc) for doc in task.test_docs()] == ["1", "2", "3"]

    (data / "test.jsonl").write_text('{"q": "no answer"}\n')  # its own layout check, one line naming file and row
    with pytest.raises(DataError, match=r"test.jsonl:1: missing field\(s\) a"):
        tasks.plan_tasks(["tiny_qa"], tmp_path / "out2", data_dir=str(tmp_path / "data"))


def test_every_family_is_registered_once():
    names = tasks.known_offline()
    assert len(names) == len(set(names))
    for family in ("mmlu", "cmmlu", "ceval-valid", "gsm8k", "arc_easy", "arc_challenge", "hellaswag", "humaneval",
                   "toy_comparison", "toy_preference", "jsonl_qa", "jsonl_choice"):
        assert family in names
    # the toy's exact-match task under its new name, the old one kept
    assert registry.lookup("toy_arithmetic").build is registry.lookup("toy_comparison").build
    assert registry.lookup("ceval").name == "ceval-valid" and registry.lookup("mmlu_anatomy").name == "mmlu"
