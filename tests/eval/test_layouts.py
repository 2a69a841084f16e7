"""--data-dir layouts (rows written here in each benchmark's original release layout), bad input, sandbox."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import pytest

from swiftkit.errors import SwiftkitError
from swiftkit.eval.config import EvalConfig
from swiftkit.eval.evaluate import run
from swiftkit.eval.sandbox import passes
from tests.conftest import run_cli


def _csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _arc_row(i: int, key: str) -> dict:
    labels = ["A", "B", "C", "D"] if i % 2 else ["1", "2", "3", "4"]  # ARC uses both label styles
    return {
        "id": f"Mercury_{i}",
        "question": {
            "stem": f"Which number is {i}?",
            "choices": [{"text": str(i + k), "label": lab} for k, lab in enumerate(labels)],
        },
        "answerKey": labels[int(key)],
    }


@pytest.fixture()
def release_layouts(tmp_path: Path, shared_data: Path) -> Path:
    """A few hand-written rows per benchmark, in the exact layout of each original release."""
    root = tmp_path / "data"
    mmlu_rows = [["What is 2 + 2?", "3", "4", "5", "6", "B"], ["Pick the vowel.", "b", "c", "a", "d", "C"]]
    _csv(root / "mmlu/test/anatomy_test.csv", mmlu_rows)  # hendrycks/test: no header, answer letter
    _csv(root / "mmlu/dev/anatomy_dev.csv", mmlu_rows)
    header = ["", "Question", "A", "B", "C", "D", "Answer"]  # haonan-li/CMMLU data/{dev,test}/<subject>.csv
    _csv(
        root / "cmmlu/test/anatomy.csv",
        [
            header,
            ["0", "二加二等于几？", "3", "4", "5", "6", "B"],
            ["1", "一加一等于几？", "2", "3", "4", "5", "A"],
        ],
    )
    _csv(root / "cmmlu/dev/anatomy.csv", [header, ["0", "三加一等于几？", "3", "4", "5", "6", "B"]])
    _csv(
        root / "ceval/val/computer_network_val.csv",
        [
            ["id", "question", "A", "B", "C", "D", "answer"],
            ["0", "TCP 属于哪一层？", "传输层", "网络层", "应用层", "链路层", "A"],
        ],
    )
    _csv(
        root / "ceval/dev/computer_network_dev.csv",
        [
            ["id", "question", "A", "B", "C", "D", "answer", "explanation"],
            ["0", "IP 属于哪一层？", "传输层", "网络层", "应用层", "链路层", "B", "IP 是网络层协议"],
        ],
    )
    for part in ("Easy", "Challenge"):  # ARC-V1-Feb2018/ARC-<part>/ARC-<part>-{Test,Train}.jsonl
        _jsonl(root / f"arc/ARC-{part}/ARC-{part}-Test.jsonl", [_arc_row(1, "2"), _arc_row(2, "0")])
        _jsonl(root / f"arc/ARC-{part}/ARC-{part}-Train.jsonl", [_arc_row(3, "1")])
    _jsonl(
        root / "hellaswag/hellaswag_val.jsonl",
        [
            {  # rowanz/hellaswag data/hellaswag_val.jsonl
                "ind": 24,
                "activity_label": "Roof shingle removal",
                "ctx_a": "A man is sitting on a roof.",
                "ctx_b": "he",
                "ctx": "A man is sitting on a roof. he",
                "split": "val",
                "split_type": "indomain",
                "label": 3,
                "endings": [
                    "is using wrap to wrap a pair of skis.",
                    "is ripping level tiles off.",
                    "is holding a rubik's cube.",
                    "starts pulling up roofing on a roof.",
                ],
                "source_id": "activitynet~v_-JhWjGDPHMY",
            }
        ],
    )
    (root / "humaneval").mkdir()
    shutil.copy(shared_data / "humaneval" / "HumanEval.jsonl.gz", root / "humaneval")  # a real copy
    return root


CUSTOM_YAML = """
task: my_larger
dataset_path: json
dataset_kwargs: {data_files: {test: DATA}}
test_split: test
output_type: generate_until
doc_to_text: "{{prompt}}"
doc_to_target: "{{target}}"
generation_kwargs: {until: ["\\n"], max_gen_toks: 4}
filter_list: [{name: number, filter: [{function: regex, regex_pattern: "(\\\\d+)"}, {function: take_first}]}]
metric_list: [{metric: exact_match}]
"""


def test_release_layouts_and_custom_tasks_score_through_lm_eval(toy_model, release_layouts, tmp_path):
    out = tmp_path / "eval"
    _jsonl(tmp_path / "qa.jsonl", [{"prompt": "What is the larger of 12 and 40?", "target": "40"}])
    (tmp_path / "larger.yaml").write_text(CUSTOM_YAML.replace("DATA", str(tmp_path / "qa.jsonl")))
    _jsonl(
        tmp_path / "choice.jsonl",
        [  # the answer as the choice's text, an index, a letter
            {"question": "larger of 12 and 40?", "choices": ["12", "40"], "answer": "40"},
            {"question": "larger of 77 and 31?", "choices": ["77", "31"], "answer": 0},
            {"question": "larger of 5 and 9?", "choices": ["5", "9"], "answer": "B"},
        ],
    )
    tasks = f"mmlu,cmmlu,ceval,arc_easy,arc_challenge,hellaswag,humaneval,jsonl_choice,{tmp_path / 'larger.yaml'}"
    proc = run_cli(
        *("eval", "--model", toy_model, "--tasks", tasks, "--data-dir", release_layouts, "--no-chat", "--limit", "2"),
        *("--max-gen-toks", "8", "--allow-code-execution", "--data", tmp_path / "choice.jsonl", "--output", out),
    )
    assert proc.returncode == 0, proc.stderr
    scores = json.loads((out / "results.json").read_text())["scores"]
    offline = {"mmlu", "cmmlu", "ceval-valid", "arc_easy", "arc_challenge", "hellaswag", "humaneval"}
    assert set(scores) == offline | {"jsonl_choice", "my_larger"}
    samples = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in (out / "samples").glob("*.jsonl")}
    assert [s["target"] for s in samples["mmlu_anatomy"]] == [1, 2]  # letters B, C -> choice index
    assert [s["target"] for s in samples["arc_easy"]] == [2, 0]  # answerKey by label, numeric labels too
    assert samples["arc_easy"][0]["arguments"][0][0] == "Question: Which number is 1?\nAnswer:"
    assert samples["cmmlu_anatomy"][0]["arguments"][0][0].endswith("答案：")  # lm-eval's own CMMLU prompt
    assert samples["hellaswag"][0]["target"] == 3 and len(samples["hellaswag"][0]["arguments"]) == 4
    assert samples["humaneval"][0]["doc"]["task_id"] == "HumanEval/0" and scores["humaneval"] == 0.0
    assert [s["target"] for s in samples["jsonl_choice"]] == [1, 0]  # --limit 2
    assert samples["my_larger"][0]["filter"] == "number"  # the user's YAML, its own regex extractor


def _cfg(out: Path, **values) -> EvalConfig:
    return EvalConfig(output=str(out / "out"), **values)


@pytest.mark.parametrize(
    ("files", "tasks", "message"),
    [
        ({"mmlu/test/anatomy_test.csv": "What?,a,b,c,D\n"}, "mmlu", "anatomy_test.csv:1: expected 6 columns"),
        ({"mmlu/test/anatomy_test.csv": "What?,a,b,c,d,E\n"}, "mmlu", "answer 'E' is neither A-D nor 0-3"),
        (
            {"gsm8k/test.jsonl": '{"question": "q"}\n', "gsm8k/train.jsonl": ""},
            "gsm8k",
            "test.jsonl:1: missing field(s) answer",
        ),
        (
            {"gsm8k/test.jsonl": '{"question": "q", "answer": "4"}\n', "gsm8k/train.jsonl": ""},
            "gsm8k",
            "answer has no '#### N'",
        ),
        (
            {"gsm8k/test.jsonl": '{"question": "q", "answer": "#### 4"}\n'},
            "gsm8k",
            "missing",
        ),  # few-shot needs train
        ({"hellaswag/val.jsonl": "{}\n"}, "hellaswag", "no local data for hellaswag"),
        (
            {"ceval/val/computer_network_val.csv": "id,question,A,B,C,D\n0,q,a,b,c,d\n"},
            "ceval",
            "header lacks column(s) answer",
        ),
    ],
)
def test_wrong_layout_is_one_error_naming_file_row_and_expected_layout(toy_model, tmp_path, files, tasks, message):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(SwiftkitError) as err:
        run(_cfg(tmp_path, model=[str(toy_model)], tasks=[tasks], data_dir=str(tmp_path)))
    assert message in err.value.message
    assert "expected layout" in err.value.hint
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial"))


def test_bad_input_fails_before_any_model_loads(toy_model, tmp_path):
    bare = shutil.copytree(toy_model, tmp_path / "no-template", ignore=shutil.ignore_patterns("chat_template.jinja"))
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    cases = [
        (_cfg(tmp_path, tasks=["toy_arithmetic"]), "give --model REF"),
        (
            _cfg(tmp_path, model=[str(toy_model)], tasks=["toy_arithmetic"], fail_under=["toy_arithmetic"]),
            "expects TASK=SCORE",
        ),
        (_cfg(tmp_path, model=[str(toy_model)], tasks=["humaneval"]), "runs model-written code"),
        (_cfg(tmp_path, model=[str(bare)], tasks=["toy_arithmetic"], chat=True), "has no chat template"),
        (_cfg(tmp_path, model=[str(toy_model)], tasks=["jsonl_qa"]), "jsonl_qa needs --data"),
        (
            _cfg(tmp_path, model=[str(toy_model)], tasks=["toy_arithmetic"], data_dir=str(tmp_path)),
            "no heldout.jsonl in",
        ),
        (
            _cfg(
                tmp_path,
                url="http://127.0.0.1:9/v1",
                tasks=["toy_arithmetic"],
                data=str(toy_model / "task" / "heldout.jsonl"),
            ),
            "cannot reach endpoint",
        ),
    ]
    for cfg, message in cases:
        with pytest.raises(SwiftkitError) as err:
            run(cfg)
        assert message in err.value.message, (message, err.value.message)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial"))


def test_unknown_task_is_one_red_line_listing_known_ones(toy_model):
    proc = run_cli("eval", "--model", toy_model, "--tasks", "no_such_task", "--limit", "1")
    assert proc.returncode == 2
    assert "unknown task(s): no_such_task" in proc.stderr and "toy_arithmetic" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sandbox_runs_code_with_time_and_memory_limits(shared_data):
    with gzip.open(shared_data / "humaneval" / "HumanEval.jsonl.gz", "rt") as fh:
        first = json.loads(fh.readline())
    program = first["prompt"] + first["canonical_solution"] + "\n" + first["test"] + f"\ncheck({first['entry_point']})\n"
    assert passes(program)
    assert not passes(program.replace("return True", "return False", 1))
    assert not passes("while True:\n    pass\n", timeout=1.0)
    assert not passes("x = bytearray(8 << 30)\n")
