"""Which tasks an eval runs, and where their data comes from.

lm-evaluation-harness owns the prompts, few-shot handling, answer extraction and metrics. swiftkit
adds two things here:

* offline data: `--data-dir` copies of a benchmark in its ORIGINAL release layout (MMLU's CSV
  folders, GSM8K's jsonl, ...) are validated row by row, converted to the schema of the hub
  dataset lm-eval's task reads, and served to lm-eval through a generated task YAML that
  `include`s lm-eval's own task file and swaps only the dataset. Prompts and metrics stay
  lm-eval's, so scores match a hub run on the same rows.
* swiftkit's own tasks for the toy model (toy_arithmetic, toy_preference) and for any jsonl of
  question/answer rows (jsonl_qa), written as lm-eval YAML too.

The generated YAMLs and converted data are kept in the eval artifact (`tasks/`), so a run can be
repeated with plain `lm_eval --include_path`. Light module: no torch import.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from swiftkit.data.sources import open_text
from swiftkit.errors import DataError, SwiftkitError

LETTERS = ("A", "B", "C", "D")


@dataclass
class TaskPlan:
    """What to hand to lm-eval: task names, the folder of generated YAMLs, and how to score."""

    names: list[str]
    include_dir: Path
    offline: bool  # every task is served from generated YAMLs (lm-eval's 15k-task index not needed)
    primary: dict[str, str] = field(default_factory=dict)  # task -> "metric,filter" shown as its score
    loglikelihood: list[str] = field(default_factory=list)  # tasks that need prompt logprobs
    sources: dict[str, str] = field(default_factory=dict)  # task -> data file / folder / "hub"


@dataclass(frozen=True)
class LocalLayout:
    """A benchmark readable from `--data-dir` in its original release layout."""

    folder: str  # DIR/<folder> (or DIR itself)
    layout: str  # the expected layout, shown in errors and docs/eval.md
    marker: str  # glob that identifies the layout inside the folder
    build: Callable[[str, Path, Path, int | None], list[str]]  # (task, source, out dir, fewshot) -> yaml names


# ---------------------------------------------------------------------------------------------
# Reading source files (errors name the file and row)


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open_text(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object per line")
            yield number, row


def _require(path: Path, number: int, row: dict, keys: tuple[str, ...], layout: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise DataError(f"{path}:{number}: missing field(s) {', '.join(missing)}", f"expected layout: {layout}")


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path.resolve())


class FunctionRef(str):
    """A `!function module.name` reference in a task YAML (lm-eval imports it)."""


class _TaskDumper(yaml.SafeDumper):
    pass


_TaskDumper.add_representer(FunctionRef, lambda dumper, ref: dumper.represent_scalar("!function", str(ref)))


def _write_yaml(out: Path, name: str, config: dict[str, Any]) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(config, Dumper=_TaskDumper, sort_keys=False, allow_unicode=True)
    (out / f"{name}.yaml").write_text(text, encoding="utf-8")
    return name


def _lm_eval_yaml(*parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SwiftkitError("lm-eval is not installed", "pip install 'lm-eval[hf,api]==0.4.13'")
    return Path(next(iter(spec.submodule_search_locations)), "tasks", *parts)


def _local_task(out: Path, task: str, own_yaml: Path, files: dict[str, str], optional: dict[str, str]) -> str:
    """lm-eval's own task YAML (prompts, metrics, filters) with only its dataset swapped for local files."""
    return _write_yaml(out, task, {"task": task, "include": str(own_yaml), "tag": [], **_local_dataset(files, optional)})


def _local_dataset(files: dict[str, str], optional: dict[str, str] | None = None) -> dict[str, Any]:
    """Point an lm-eval task at local jsonl files; `optional` split keys absent locally are unset
    (lm-eval would otherwise index e.g. dataset["train"] for its few-shot sampler and fail)."""
    unset = {key: None for key, split in (optional or {}).items() if split not in files}
    return {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files}, **unset}


# ---------------------------------------------------------------------------------------------
# Multiple-choice CSV folders: MMLU, CMMLU, C-Eval


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [row for row in csv.reader(fh) if row]


def _mmlu_rows(path: Path, layout: str) -> list[dict[str, Any]]:
    """hendrycks/test CSVs (no header, answer A-D) or the header + numeric-answer export layout."""
    rows = _read_csv(path)
    start = 1 if rows and [c.strip().lower() for c in rows[0][:2]] == ["question", "choice0"] else 0
    subject = path.stem.rsplit("_", 1)[0]
    docs = []
    for number, row in enumerate(rows[start:], start + 1):
        if len(row) != 6:
            raise DataError(
                f"{path}:{number}: expected 6 columns (question, 4 choices, answer), got {len(row)}",
                f"expected layout: {layout}",
            )
        answer = row[5].strip()
        index = LETTERS.index(answer) if answer in LETTERS else int(answer) if answer in ("0", "1", "2", "3") else None
        if index is None:
            raise DataError(f"{path}:{number}: answer {answer!r} is neither A-D nor 0-3", f"expected layout: {layout}")
        docs.append({"question": row[0], "subject": subject, "choices": row[1:5], "answer": index})
    if not docs:
        raise DataError(f"{path}: no rows", f"expected layout: {layout}")
    return docs


MMLU_LAYOUT = (
    "DIR/mmlu/test/<subject>_test.csv (+ DIR/mmlu/dev/<subject>_dev.csv for few-shot): "
    "hendrycks/test CSVs without header (question,A,B,C,D,answer-letter), "
    "or with header question,choice0,choice1,choice2,choice3,answer (0-3)"
)


def _build_mmlu(task: str, source: Path, out: Path, fewshot: int | None) -> list[str]:
    tests = sorted((source / "test").glob("*_test.csv"))
    wanted = task.removeprefix("mmlu_") if task != "mmlu" else None
    if wanted:
        tests = [t for t in tests if t.stem.removesuffix("_test") == wanted]
    if not tests:
        raise DataError(
            f"no MMLU test files{' for ' + wanted if wanted else ''} in {source}/test",
            f"expected layout: {MMLU_LAYOUT}",
        )
    names = []
    for test in tests:
        subject = test.stem.removesuffix("_test")
        dev = source / "dev" / f"{subject}_dev.csv"
        files = {"test": _write_jsonl(out / "data" / f"mmlu_{subject}_test.jsonl", _mmlu_rows(test, MMLU_LAYOUT))}
        if dev.is_file():
            files["dev"] = _write_jsonl(out / "data" / f"mmlu_{subject}_dev.jsonl", _mmlu_rows(dev, MMLU_LAYOUT))
        elif fewshot:  # lm-eval scores these 0-shot unless --num-fewshot says otherwise
            raise DataError(
                f"missing {dev} (MMLU takes its few-shot examples from dev)",
                "add the dev CSVs or pass --num-fewshot 0",
            )
        own = _lm_eval_yaml("mmlu", "default", f"mmlu_{subject}.yaml")
        config: dict[str, Any] = {"task": f"mmlu_{subject}", "include": str(own)}
        if not own.is_file():  # a subject lm-eval does not know: same template, same description wording
            config = {
                "task": f"mmlu_{subject}",
                "include": str(_lm_eval_yaml("mmlu", "default", "_default_template_yaml")),
                "description": f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n",
            }
        names.append(
            _write_yaml(
                out,
                f"mmlu_{subject}",
                {**config, "tag": [], **_local_dataset(files, {"fewshot_split": "dev"})},
            )
        )
    if wanted:
        return names
    return [
        _write_yaml(
            out,
            "mmlu",
            {
                "group": "mmlu",
                "task": names,
                "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
                "metadata": {"version": 2},
            },
        )
    ]


CMMLU_LAYOUT = "DIR/cmmlu/test/<subject>.csv (+ dev/<subject>.csv): haonan-li/CMMLU data/ CSVs with header ,Question,A,B,C,D,Answer"


def _build_cmmlu(task: str, source: Path, out: Path, fewshot: int | None) -> list[str]:
    tests = sorted((source / "test").glob("*.csv"))
    wanted = task.removeprefix("cmmlu_") if task != "cmmlu" else None
    if wanted:
        tests = [t for t in tests if t.stem == wanted]
    if not tests:
        raise DataError(
            f"no CMMLU test files{' for ' + wanted if wanted else ''} in {source}/test",
            f"expected layout: {CMMLU_LAYOUT}",
        )
    return _lettered_subjects(
        out,
        "cmmlu",
        "CMMLU",
        CMMLU_LAYOUT,
        wanted,
        1,
        [(t.stem, t, source / "dev" / f"{t.stem}.csv", ("Question", "Answer")) for t in tests],
        split="test",
        own_yaml=lambda subject: _lm_eval_yaml("cmmlu", f"cmmlu_{subject}.yaml"),
        fewshot=fewshot,
    )


def _lettered_rows(path: Path, question: str, answer: str, layout: str) -> list[dict[str, Any]]:
    """CSV with a header naming question/A/B/C/D/answer columns (CMMLU, C-Eval), kept as the hub schema."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in (question, *LETTERS, answer) if c not in header]
        if missing:
            raise DataError(
                f"{path}: header lacks column(s) {', '.join(missing)} (has {', '.join(header)})",
                f"expected layout: {layout}",
            )
        docs = []
        for number, row in enumerate(reader, 2):
            if row[answer].strip() not in LETTERS:
                raise DataError(f"{path}:{number}: answer {row[answer]!r} is not A-D", f"expected layout: {layout}")
            # Only the columns lm-eval's prompt reads: dev files carry an extra `explanation`, and
            # one schema across splits is what the json loader needs.
            docs.append({c: row[c] or "" for c in (question, *LETTERS, answer)})
    return docs


CEVAL_LAYOUT = (
    "DIR/ceval/val/<subject>_val.csv (+ dev/<subject>_dev.csv): ceval-exam release CSVs "
    "with header id,question,A,B,C,D,answer[,explanation]"
)


def _build_ceval(task: str, source: Path, out: Path, fewshot: int | None) -> list[str]:
    vals = sorted((source / "val").glob("*_val.csv"))
    wanted = task.removeprefix("ceval-valid_") if task.startswith("ceval-valid_") else None
    if wanted:
        vals = [v for v in vals if v.stem.removesuffix("_val") == wanted]
    if not vals:
        raise DataError(f"no C-Eval val files in {source}/val", f"expected layout: {CEVAL_LAYOUT}")
    return _lettered_subjects(
        out,
        "ceval-valid",
        "C-Eval",
        CEVAL_LAYOUT,
        wanted,
        2,
        [(v.stem.removesuffix("_val"), v, source / "dev" / f"{v.stem.removesuffix('_val')}_dev.csv", ("question", "answer")) for v in vals],
        split="val",
        own_yaml=lambda subject: _lm_eval_yaml("ceval", f"ceval-valid_{subject}.yaml"),
        fewshot=fewshot,
    )


def _lettered_subjects(
    out: Path,
    prefix: str,
    label: str,
    layout: str,
    wanted: str | None,
    version: int,
    subjects: list[tuple[str, Path, Path, tuple[str, str]]],
    split: str,
    own_yaml,
    fewshot: int | None,
) -> list[str]:
    """One lm-eval task per subject CSV (CMMLU, C-Eval): local data swapped into lm-eval's own YAML,
    dev CSVs as the few-shot split, and a group over all subjects unless one subject was asked for."""
    names = []
    for subject, path, dev, (question, answer) in subjects:
        files = {split: _write_jsonl(out / "data" / f"{prefix}_{subject}_{split}.jsonl", _lettered_rows(path, question, answer, layout))}
        if dev.is_file():
            files["dev"] = _write_jsonl(out / "data" / f"{prefix}_{subject}_dev.jsonl", _lettered_rows(dev, question, answer, layout))
        elif fewshot:  # lm-eval scores these 0-shot unless --num-fewshot says otherwise
            raise DataError(f"missing {dev} ({label} takes its few-shot examples from dev)", "add the dev CSVs or pass --num-fewshot 0")
        own = own_yaml(subject)
        if not own.is_file():
            raise DataError(f"{path}: lm-eval has no {label} subject {subject!r}", f"expected layout: {layout}")
        task = f"{prefix}_{subject}"
        names.append(_local_task(out, task, own, files, {"fewshot_split": "dev"}))
    if wanted:
        return names
    metrics = [{"metric": "acc", "weight_by_size": True}, {"metric": "acc_norm", "weight_by_size": True}]
    return [_write_yaml(out, prefix, {"group": prefix, "task": names, "aggregate_metric_list": metrics, "metadata": {"version": version}})]


# ---------------------------------------------------------------------------------------------
# jsonl benchmarks: GSM8K, ARC, HellaSwag, HumanEval

GSM8K_LAYOUT = (
    "DIR/gsm8k/test.jsonl (+ train.jsonl for few-shot; test*.jsonl / train*.jsonl accepted): "
    "openai/grade-school-math rows {question, answer ending '#### N'}"
)


def _one_file(folder: Path, pattern: str, layout: str, required: bool = True) -> Path | None:
    matches = sorted(folder.glob(pattern))
    exact = [m for m in matches if m.name == pattern.replace("*", "")]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise DataError(
            f"several files match {folder}/{pattern}: {', '.join(m.name for m in matches)}",
            f"expected layout: {layout}",
        )
    if required:
        raise DataError(f"missing {folder}/{pattern.replace('*', '')}", f"expected layout: {layout}")
    return None


def _gsm8k_rows(path: Path) -> list[dict]:
    rows = []
    for number, row in _read_jsonl(path):
        _require(path, number, row, ("question", "answer"), GSM8K_LAYOUT)
        if "####" not in row["answer"]:
            raise DataError(f"{path}:{number}: answer has no '#### N' final line", f"expected layout: {GSM8K_LAYOUT}")
        rows.append({"question": row["question"], "answer": row["answer"]})
    return rows


def _build_gsm8k(task: str, source: Path, out: Path, fewshot: int | None) -> list[str]:
    test = _one_file(source, "test*.jsonl", GSM8K_LAYOUT)
    train = _one_file(source, "train*.jsonl", GSM8K_LAYOUT, required=fewshot != 0)
    files = {"test": _write_jsonl(out / "data" / "gsm8k_test.jsonl", _gsm8k_rows(test))}
    if train:
        files["train"] = _write_jsonl(out / "data" / "gsm8k_train.jsonl", _gsm8k_rows(train))
    return [_local_task(out, "gsm8k", _lm_eval_yaml("gsm8k", "gsm8k.yaml"), files, {"training_split": "train", "fewshot_split": "train"})]


ARC_LAYOUT = (
    "DIR/arc/ARC-{Easy,Challenge}/ARC-{Easy,Challenge}-Test.jsonl (+ -Train.jsonl, -Dev.jsonl): "
    "ARC-V1-Feb2018 rows "
    "{id, question: {stem, choices: [{text, label}]}, answerKey}"
)


def _arc_rows(path: Path) -> list[dict]:
    rows = []
    for number, row in _read_jsonl(path):
        _require(path, number, row, ("id", "question", "answerKey"), ARC_LAYOUT)
        question = row["question"]
        if not isinstance(question, dict) or "stem" not in question or "choices" not in question:
            raise DataError(f"{path}:{number}: question must be {{stem, choices}}", f"expected layout: {ARC_LAYOUT}")
        labels = [c["label"] for c in question["choices"]]
        if row["answerKey"] not in labels:
            raise DataError(
                f"{path}:{number}: answerKey {row['answerKey']!r} not among labels {labels}",
                f"expected layout: {ARC_LAYOUT}",
            )
        rows.append(
            {
                "id": row["id"],
                "question": question["stem"],
                "answerKey": row["answerKey"],
                "choices": {"text": [c["text"] for c in question["choices"]], "label": labels},
            }
        )
    return rows


def _build_arc(task: str, source: Path, out: Path, fewshot: int | None) -> list[str]:
    part = "ARC-Easy" if task == "arc_easy" else "ARC-Challenge"
    folder = source / part if (source / part).is_dir() else source
    files = {
        "test": _write_jsonl(
            out / "data" / f"{task}_test.jsonl",
            _arc_rows(_one_file(folder, f"{part}-Test.jsonl", ARC_LAYOUT)),
        )
    }
    for split, name in (("train", "Train"), ("validation", "Dev")):
        found = _one_file(folder, f"{part}-{name}.jsonl", ARC_LAYOUT, required=False)
        if found:
            files[split] = _write_jsonl(out / "data" / f"{task}_{split}.jsonl", _arc_rows(found))
    if fewshot and "train" not in files:
        raise DataError(
            f"missing {folder}/{part}-Train.jsonl (ARC takes its few-shot examples from train)",
            f"expected layout: {ARC_LAYOUT}",
        )
    return [
        _local_task(out, task, _lm_eval_yaml("arc", f"{task}.yaml"), files, {"training_split": "train", "validation_split": "validation"})
    ]


HELLASWAG_LAYOUT = (
    "DIR/hellaswag/hellaswag_val.jsonl (+ hellaswag_train.jsonl for few-shot): "
    "rowanz/hellaswag rows {activity_label, ctx_a, ctx_b, endings, label}"
)


def _hellaswag_rows(path: Path) -> list[dict]:
    rows = []
    for number, row in _read_jsonl(path):
        _require(path, number, row, ("activity_label", "ctx_a", "ctx_b", "endings", "label"), HELLASWAG_LAYOUT)
        if not isinstance(row["endings"], list) or len(row["endings"]) != 4:
            raise DataError(f"{path}:{number}: endings must be a list of 4", f"expected layout: {HELLASWAG_LAYOUT}")
        rows.append({**row, "label": str(row["label"])})  # the hub copy stores label as a string
    return rows


def _build_hellaswag(task: str, source: Path, out: Path, fewshot: int | None) -> list[str]:
    files = {
        "validation": _write_jsonl(
            out / "data" / "hellaswag_validation.jsonl",
            _hellaswag_rows(_one_file(source, "hellaswag_val.jsonl", HELLASWAG_LAYOUT)),
        )
    }
    train = _one_file(source, "hellaswag_train.jsonl", HELLASWAG_LAYOUT, required=bool(fewshot))
    if train:
        files["train"] = _write_jsonl(out / "data" / "hellaswag_train.jsonl", _hellaswag_rows(train))
    return [_local_task(out, "hellaswag", _lm_eval_yaml("hellaswag", "hellaswag.yaml"), files, {"training_split": "train"})]


HUMANEVAL_LAYOUT = (
    "DIR/humaneval/HumanEval.jsonl.gz (or HumanEval.jsonl): openai/human-eval rows {task_id, prompt, entry_point, canonical_solution, test}"
)


def _build_humaneval(task: str, source: Path, out: Path, fewshot: int | None) -> list[str]:
    path = _one_file(source, "HumanEval.jsonl.gz", HUMANEVAL_LAYOUT, required=False) or _one_file(
        source, "HumanEval.jsonl", HUMANEVAL_LAYOUT
    )
    rows = []
    for number, row in _read_jsonl(path):
        _require(path, number, row, ("task_id", "prompt", "entry_point", "test"), HUMANEVAL_LAYOUT)
        rows.append(row)
    files = {"test": _write_jsonl(out / "data" / "humaneval_test.jsonl", rows)}
    return [_write_yaml(out, "humaneval", humaneval_config(files))]


def humaneval_config(files: dict[str, str] | None) -> dict[str, Any]:
    """lm-eval's humaneval task with the scorer swapped for swiftkit's sandbox.

    Not an `include` of lm-eval's file: resolving it imports its utils, which fetch the `code_eval`
    metric from the hub at import time (fails offline) and run the code in-process threads.
    """
    dataset = _local_dataset(files) if files else {"dataset_path": "openai/openai_humaneval"}
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
        "generation_kwargs": {
            "until": ["\nclass", "\ndef", "\n#", "\nif", "\nprint"],
            "max_gen_toks": 1024,
            "do_sample": False,
        },
        "repeats": 1,
        "num_fewshot": 0,
        "metadata": {"version": 1.0},
    }


LAYOUTS: dict[str, LocalLayout] = {
    "mmlu": LocalLayout("mmlu", MMLU_LAYOUT, "test/*_test.csv", _build_mmlu),
    "cmmlu": LocalLayout("cmmlu", CMMLU_LAYOUT, "test/*.csv", _build_cmmlu),
    "ceval-valid": LocalLayout("ceval", CEVAL_LAYOUT, "val/*_val.csv", _build_ceval),
    "gsm8k": LocalLayout("gsm8k", GSM8K_LAYOUT, "test*.jsonl", _build_gsm8k),
    "arc_easy": LocalLayout("arc", ARC_LAYOUT, "**/ARC-Easy-Test.jsonl", _build_arc),
    "arc_challenge": LocalLayout("arc", ARC_LAYOUT, "**/ARC-Challenge-Test.jsonl", _build_arc),
    "hellaswag": LocalLayout("hellaswag", HELLASWAG_LAYOUT, "hellaswag_val.jsonl", _build_hellaswag),
    "humaneval": LocalLayout("humaneval", HUMANEVAL_LAYOUT, "HumanEval.jsonl*", _build_humaneval),
}
ALIASES = {"ceval": "ceval-valid"}
# The score shown per task (lm-eval reports more; results.json keeps them all).
PRIMARY_METRIC = {
    "mmlu": "acc,none",
    "cmmlu": "acc,none",
    "ceval-valid": "acc,none",
    "gsm8k": "exact_match,strict-match",
    "arc_easy": "acc_norm,none",
    "arc_challenge": "acc_norm,none",
    "hellaswag": "acc_norm,none",
    "humaneval": "pass@1,none",
    "toy_arithmetic": "exact_match,strict",
    "toy_preference": "win_rate,none",
    "jsonl_qa": "exact_match,strict",
    "jsonl_choice": "acc,none",
}
LOGLIKELIHOOD_TASKS = {
    "mmlu",
    "cmmlu",
    "ceval-valid",
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "toy_preference",
    "jsonl_choice",
}


def _layout_for(task: str) -> tuple[str, LocalLayout] | None:
    for name, layout in LAYOUTS.items():
        if (
            task == name
            or (name in ("mmlu", "cmmlu") and task.startswith(name + "_"))
            or (name == "ceval-valid" and task.startswith("ceval-valid_"))
        ):
            return name, layout
    return None


def _source_folder(data_dir: Path, task: str, layout: LocalLayout) -> Path:
    """DIR/<folder> when present, else DIR itself when it already holds the layout."""
    for candidate in (data_dir / layout.folder, data_dir):
        if candidate.is_dir() and any(candidate.glob(layout.marker)):
            return candidate
    raise DataError(f"no local data for {task} in {data_dir}", f"expected layout: {layout.layout}")


# ---------------------------------------------------------------------------------------------
# swiftkit's own tasks


TOY_QA_LAYOUT = "jsonl rows {question, answer} (the toy artifact's task/heldout.jsonl)"
TOY_PREF_LAYOUT = (
    "jsonl rows {prompt: [{role: user, content}], chosen: [{role: assistant, content}], rejected: [...]} "
    "(the toy artifact's task/dpo.jsonl)"
)


def _qa_rows(path: Path) -> list[dict]:
    rows = []
    for number, row in _read_jsonl(path):
        question, answer = row.get("question", row.get("prompt")), row.get("answer", row.get("target"))
        if not isinstance(question, str) or answer is None:
            raise DataError(
                f"{path}:{number}: needs string 'question' (or 'prompt') and 'answer' (or 'target')",
                f"expected layout: {TOY_QA_LAYOUT}",
            )
        rows.append({"question": question, "answer": str(answer).strip()})
    if not rows:
        raise DataError(f"{path}: no rows", f"expected layout: {TOY_QA_LAYOUT}")
    return rows


def _content(path: Path, number: int, value: Any, role: str) -> str:
    """The text of a one-message list (or a plain string): multi-turn prompts are not scored here."""
    if isinstance(value, str):
        return value
    turns = [m for m in value if isinstance(m, dict) and m.get("role") != "system"] if isinstance(value, list) else []
    if len(turns) != 1 or turns[0].get("role") != role or not isinstance(turns[0].get("content"), str):
        raise DataError(f"{path}:{number}: expected one {role} message", f"expected layout: {TOY_PREF_LAYOUT}")
    return turns[0]["content"]


def _preference_rows(path: Path) -> list[dict]:
    rows = []
    for number, row in _read_jsonl(path):
        _require(path, number, row, ("prompt", "chosen", "rejected"), TOY_PREF_LAYOUT)
        rows.append(
            {
                "prompt": _content(path, number, row["prompt"], "user"),
                "chosen": _content(path, number, row["chosen"], "assistant"),
                "rejected": _content(path, number, row["rejected"], "assistant"),
            }
        )
    if not rows:
        raise DataError(f"{path}: no rows", f"expected layout: {TOY_PREF_LAYOUT}")
    return rows


def _qa_task(name: str, data: Path, out: Path, max_gen_toks: int) -> str:
    """Greedy generation scored by exact match of the whole (stripped) answer."""
    files = {"test": _write_jsonl(out / "data" / f"{name}.jsonl", _qa_rows(data))}
    return _write_yaml(
        out,
        name,
        {
            "task": name,
            **_local_dataset(files),
            "output_type": "generate_until",
            "test_split": "test",
            "doc_to_text": "{{question}}",
            "doc_to_target": "{{answer}}",
            "target_delimiter": " ",
            # A fixed stop set: end of turn (chat), end of line (plain prompts).
            "generation_kwargs": {
                "until": ["\n", "<|im_end|>", "<|endoftext|>"],
                "max_gen_toks": max_gen_toks,
                "do_sample": False,
            },
            "filter_list": [
                {
                    "name": "strict",
                    "filter": [
                        {"function": "regex", "regex_pattern": r"^\s*(\S+?)\s*$"},
                        {"function": "take_first"},
                    ],
                }
            ],
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
            "num_fewshot": 0,
            "metadata": {"version": 1.0},
        },
    )


def _preference_task(data: Path, out: Path, end_of_turn: str) -> str:
    """logp(chosen) vs logp(rejected) after the prompt: win rate and mean margin (nats).

    The continuation includes the end-of-turn text the chat template closes an answer with, as DPO
    training scores it, so "8" can never win against "82" by stopping early.
    """
    rows = [{**r, "choices": [r["chosen"] + end_of_turn, r["rejected"] + end_of_turn]} for r in _preference_rows(data)]
    files = {"test": _write_jsonl(out / "data" / "toy_preference.jsonl", rows)}
    return _write_yaml(
        out,
        "toy_preference",
        {
            "task": "toy_preference",
            **_local_dataset(files),
            "output_type": "multiple_choice",
            "test_split": "test",
            "doc_to_text": "{{prompt}}",
            "doc_to_choice": "choices",
            "doc_to_target": 0,
            "process_results": FunctionRef("swiftkit.eval.preference.process_results"),
            "metric_list": [
                {"metric": "win_rate", "aggregation": "mean", "higher_is_better": True},
                {"metric": "margin", "aggregation": "mean", "higher_is_better": True},
            ],
            "num_fewshot": 0,
            "metadata": {"version": 1.0},
        },
    )


CHOICE_LAYOUT = "jsonl rows {question, choices: [text, ...], answer: index, letter or the right choice's text}"


def _choice_rows(path: Path) -> list[dict]:
    rows = []
    for number, row in _read_jsonl(path):
        question, choices, answer = row.get("question"), row.get("choices"), row.get("answer")
        if not isinstance(question, str) or not isinstance(choices, list) or len(choices) < 2:
            raise DataError(f"{path}:{number}: needs a string 'question' and a list of 2+ 'choices'", f"expected layout: {CHOICE_LAYOUT}")
        choices = [str(c) for c in choices]
        letters = [chr(ord("A") + i) for i in range(len(choices))]
        if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
            index = answer
        elif str(answer) in choices:
            index = choices.index(str(answer))
        elif str(answer) in letters:
            index = letters.index(str(answer))
        else:
            raise DataError(
                f"{path}:{number}: answer {answer!r} is not an index, letter or one of the choices", f"expected layout: {CHOICE_LAYOUT}"
            )
        rows.append({"question": question, "choices": choices, "answer": index})
    if not rows:
        raise DataError(f"{path}: no rows", f"expected layout: {CHOICE_LAYOUT}")
    return rows


def _choice_task(data: Path, out: Path) -> str:
    """Multiple choice by log-likelihood of each choice after the question (acc and acc_norm)."""
    files = {"test": _write_jsonl(out / "data" / "jsonl_choice.jsonl", _choice_rows(data))}
    return _write_yaml(
        out,
        "jsonl_choice",
        {
            "task": "jsonl_choice",
            **_local_dataset(files),
            "output_type": "multiple_choice",
            "test_split": "test",
            "doc_to_text": "{{question}}",
            "doc_to_choice": "choices",
            "doc_to_target": "answer",
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
            "num_fewshot": 0,
            "metadata": {"version": 1.0},
        },
    )


class _TagTolerantLoader(yaml.SafeLoader):
    """Reads an lm-eval task YAML for its name and kind without importing its `!function`s."""


_TagTolerantLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def _yaml_task(path: Path, out: Path) -> tuple[str, dict[str, Any]]:
    """A user's own lm-eval task YAML, served by a stub that `include`s it (its own relative
    `include:` and `!function utils.x` references keep resolving next to the original)."""
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TagTolerantLoader)
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    key = "group" if isinstance(config, dict) and "group" in config else "task"
    if not isinstance(config, dict) or not isinstance(config.get(key), str):
        raise DataError(f"{path}: an lm-eval task YAML needs a `task:` (or `group:`) name", "see lm-eval's docs/task_guide.md")
    return _write_yaml(out, config[key], {key: config[key], "include": str(path.resolve())}), config


OWN_TASKS = {
    "toy_arithmetic": TOY_QA_LAYOUT,
    "toy_preference": TOY_PREF_LAYOUT,
    "jsonl_qa": TOY_QA_LAYOUT,
    "jsonl_choice": CHOICE_LAYOUT,
}


def _toy_file(task: str, data_dir: Path | None, data: Path | None, model_dirs: list[Path]) -> Path:
    # Held-out preference pairs when the toy has them (dpo.jsonl is DPO's training data: scoring on
    # it measures recall, not generalisation).
    names = ("heldout_pref.jsonl", "dpo.jsonl") if task == "toy_preference" else ("heldout.jsonl",)
    if data is not None and task != "toy_preference":
        return data
    roots = [data_dir] if data_dir else model_dirs
    for root in roots:
        for filename in names:
            for candidate in (root / filename, root / "task" / filename):
                if candidate.is_file():
                    return candidate
    where = str(data_dir) if data_dir else "the model artifact or its parents"
    raise DataError(
        f"{task}: no {' or '.join(names)} in {where}",
        f"pass --data-dir <toy artifact>/task (layout: {OWN_TASKS[task]})",
    )


# ---------------------------------------------------------------------------------------------


def plan_tasks(
    tasks: list[str],
    out: Path,
    data_dir: str | None = None,
    data: str | None = None,
    num_fewshot: int | None = None,
    max_gen_toks: int | None = None,
    model_dirs: list[Path] | None = None,
    end_of_turn: str = "",
    allow_code_execution: bool = False,
) -> TaskPlan:
    """Validate task names and local data, write the task YAMLs; raises before any model loads."""
    if not tasks:
        raise SwiftkitError("no tasks given", f"e.g. --tasks toy_arithmetic,mmlu; offline tasks: {', '.join(known_offline())}")
    root = Path(data_dir).expanduser() if data_dir else None
    if root is not None and not root.is_dir():
        raise DataError(f"--data-dir is not a folder: {root}")
    data_file = Path(data).expanduser() if data else None
    if data_file is not None and not data_file.is_file():
        raise DataError(f"--data file not found: {data_file}")
    plan = TaskPlan(names=[], include_dir=out, offline=True)
    for raw in tasks:
        task = ALIASES.get(raw, raw)
        base = _layout_for(task)
        if task.endswith((".yaml", ".yml")):
            if not Path(task).is_file():
                raise DataError(f"task YAML not found: {task}")
            name, config = _yaml_task(Path(task), out)
            plan.names.append(name)
            plan.sources[name] = str(Path(task).resolve())
            plan.primary[name] = ""
            if config.get("output_type") in ("multiple_choice", "loglikelihood", "loglikelihood_rolling"):
                plan.loglikelihood.append(name)
            # A group may name lm-eval's own tasks, which only its full index knows.
            plan.offline = plan.offline and "group" not in config
            continue
        if task in OWN_TASKS:
            if task in ("jsonl_qa", "jsonl_choice") and data_file is None:
                raise SwiftkitError(f"{task} needs --data FILE.jsonl", f"layout: {OWN_TASKS[task]}")
            source = _toy_file(task, root, data_file, model_dirs or [])
            if task == "toy_preference":
                name = _preference_task(source, out, end_of_turn)
            elif task == "jsonl_choice":
                name = _choice_task(source, out)
            else:
                name = _qa_task(task, source, out, max_gen_toks or 8)
            plan.names.append(name)
            plan.sources[task] = str(source.resolve())
        elif task == "humaneval" or (base and root is not None):
            if task == "humaneval" and not allow_code_execution:
                raise SwiftkitError(
                    "humaneval runs model-written code",
                    "pass --allow-code-execution to run it in a sandboxed subprocess",
                )
            if root is None:
                plan.names.append(_write_yaml(out, "humaneval", humaneval_config(None)))
                plan.sources[task] = "hub"
                continue
            _, layout = base
            source = _source_folder(root, task, layout)
            plan.names += layout.build(task, source, out, num_fewshot)
            plan.sources[task] = str(source.resolve())
        else:
            plan.names.append(task)
            plan.offline = False
            plan.sources[task] = "hub"
        family = next((f for f in ("mmlu", "cmmlu", "ceval-valid") if task.startswith(f + "_")), task)
        plan.primary[task] = PRIMARY_METRIC.get(task, PRIMARY_METRIC.get(family, ""))
        if task in LOGLIKELIHOOD_TASKS or family in LOGLIKELIHOOD_TASKS:
            plan.loglikelihood.append(task)
    return plan


def surely_unknown(names: list[str]) -> list[str]:
    """Names that appear in none of lm-eval's task YAMLs.

    lm-eval's own index parses ~15k YAML files (10+ s on a small CPU); a plain word scan of the
    same files takes ~2 s, so a typo fails fast. Names it passes are still checked by the index.
    """
    import re

    root = _lm_eval_yaml()
    words: set[str] = set()
    for path in root.rglob("*.yaml"):
        words.update(re.findall(r"[\w.-]+", path.read_text(encoding="utf-8", errors="ignore")))
    return [n for n in names if n not in words]


def known_offline() -> list[str]:
    return [*OWN_TASKS, *LAYOUTS, *ALIASES]
