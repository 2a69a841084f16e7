"""GRPO's reward functions: the built-in verifiable rewards, the user's own, and a reward-model artifact.

Every reward is a TRL reward function: `f(prompts, completions, **columns) -> list[float | None]`, called
with the rollout batch and every other column of the prompt rows (so a row's `answer`, `tests` or
`schema` reach it by name). Completions arrive as TRL gives them: a string, or for chat prompts a list
with one assistant message.

`--reward` specs:
- `exact_match`: the completion's final answer equals the row's `answer` (extracted the same way from
  both; `--answer-format` says how: gsm8k `#### N`, last number, `\\boxed{}`, or `regex:PATTERN`);
- `format`: the completion has an extractable final answer (or matches `--format-regex` in full);
- `json`: the completion parses as JSON and, given a schema (the row's `schema` column or
  `--json-schema FILE`), validates against it;
- `code_tests`: the completion's code passes the row's `tests` in eval's sandbox (only with
  `--allow-code-execution`, as for HumanEval);
- `module:function` or `path/to/file.py:function`: the user's own reward function;
- `rm:PATH`: a `swiftkit rm` artifact; its score of prompt + completion is the reward.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swiftkit.errors import SwiftkitError

RewardFunc = Callable[..., list[float | None]]
BUILT_IN = ("exact_match", "format", "json", "code_tests")
ANSWER_FORMATS = ("auto", "gsm8k", "last_number", "boxed")
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_GSM8K = re.compile(r"####\s*(.+)")
_BOXED = re.compile(r"\\boxed\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")
_FENCE = re.compile(r"```(?:json|python|py)?\s*\n(.*?)```", re.S)


def text_of(completion: Any) -> str:
    """A completion's text: TRL passes a string, or a list of messages for chat prompts."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    return str(completion)


def check_answer_format(spec: str) -> None:
    if spec in ANSWER_FORMATS:
        return
    if spec.startswith("regex:"):
        try:
            pattern = re.compile(spec[len("regex:") :])
        except re.error as exc:
            raise SwiftkitError(f"--answer-format {spec}: not a regular expression ({exc})") from None
        if pattern.groups > 1:
            raise SwiftkitError(f"--answer-format {spec}: use at most one capture group (the answer)")
        return
    raise SwiftkitError(f"--answer-format {spec}: unknown", f"choose from: {', '.join(ANSWER_FORMATS)}, regex:PATTERN")


def extract_answer(text: str, spec: str = "auto") -> str | None:
    """The final answer in `text`, normalised (numbers without commas, `$` or a trailing `.0`); None if none.

    auto tries, in order, GSM8K's `#### N`, a `\\boxed{}` answer, the last number, then the whole text
    stripped (so a bare word answer still compares).
    """
    if spec.startswith("regex:"):
        found = re.findall(spec[len("regex:") :], text)
        return _normalise(found[-1]) if found else None
    order = {"auto": ("gsm8k", "boxed", "last_number"), "gsm8k": ("gsm8k",), "boxed": ("boxed",), "last_number": ("last_number",)}[spec]
    for kind in order:
        if kind == "gsm8k" and (m := _GSM8K.findall(text)):
            return _normalise(m[-1])
        if kind == "boxed" and (m := _BOXED.findall(text)):
            return _normalise(m[-1])
        if kind == "last_number" and (m := _NUMBER.findall(text)):
            return _normalise(m[-1])
    stripped = text.strip()
    return _normalise(stripped) if spec == "auto" and stripped else None


def _normalise(answer: str) -> str:
    answer = answer.strip().rstrip(".").strip()
    if _NUMBER.fullmatch(answer):
        number = answer.replace(",", "").replace("$", "")
        if "." in number:
            number = number.rstrip("0").rstrip(".")
        return number or "0"
    return answer


def exact_match(answer_format: str = "auto", column: str = "answer") -> RewardFunc:
    def exact_match(prompts, completions, **columns) -> list[float | None]:
        answers = columns.get(column)
        if answers is None:
            raise SwiftkitError(f"reward exact_match: the data has no `{column}` column", "map yours with --columns answer=THEIRS")
        out: list[float | None] = []
        for completion, answer in zip(completions, answers, strict=True):
            expected = extract_answer(str(answer), answer_format)
            out.append(float(expected is not None and extract_answer(text_of(completion), answer_format) == expected))
        return out

    return exact_match


def answer_format_reward(answer_format: str = "auto", format_regex: str | None = None) -> RewardFunc:
    pattern = re.compile(format_regex, re.S) if format_regex else None
    # In auto mode anything non-empty "has an answer"; the format reward asks for an explicit one.
    strict = "last_number" if answer_format == "auto" else answer_format

    def format(prompts, completions, **columns) -> list[float | None]:
        texts = [text_of(c) for c in completions]
        if pattern is not None:
            return [float(pattern.fullmatch(t.strip()) is not None) for t in texts]
        return [float(extract_answer(t, strict) is not None) for t in texts]

    return format


def _json_payload(text: str) -> Any:
    fenced = _FENCE.search(text)
    return json.loads(fenced.group(1) if fenced else text.strip())


def json_reward(schema_file: str | None = None) -> RewardFunc:
    import jsonschema

    fixed = _read_schema(schema_file) if schema_file else None

    def json_valid(prompts, completions, **columns) -> list[float | None]:
        schemas = columns.get("schema") or [None] * len(completions)
        out: list[float | None] = []
        for completion, row_schema in zip(completions, schemas, strict=True):
            schema = fixed or (json.loads(row_schema) if isinstance(row_schema, str) else row_schema)
            try:
                value = _json_payload(text_of(completion))
                if schema:
                    jsonschema.validate(value, schema)
                out.append(1.0)
            except (ValueError, jsonschema.ValidationError):
                out.append(0.0)
        return out

    return json_valid


def _read_schema(path: str) -> dict:
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SwiftkitError(f"--json-schema {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SwiftkitError(f"--json-schema {path}: not JSON ({exc})") from None
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise SwiftkitError(f"--json-schema {path}: not a valid JSON schema ({exc.message})") from None
    return schema


def code_reward(allowed: bool) -> RewardFunc:
    if not allowed:
        raise SwiftkitError(
            "reward code_tests runs model-written code",
            "pass --allow-code-execution to run it (sandboxed as eval runs HumanEval; use a container for untrusted models)",
        )
    from swiftkit.eval.sandbox import passes

    def code_tests(prompts, completions, **columns) -> list[float | None]:
        tests = columns.get("tests")
        if tests is None:
            raise SwiftkitError("reward code_tests: the data has no `tests` column", "map yours with --columns tests=THEIRS")
        out: list[float | None] = []
        for completion, test in zip(completions, tests, strict=True):
            text = text_of(completion)
            fenced = _FENCE.search(text)
            out.append(float(passes(f"{fenced.group(1) if fenced else text}\n\n{test}\n", timeout=5.0)))
        return out

    return code_tests


def user_reward(spec: str) -> RewardFunc:
    """`module:function` (importable) or `path/to/file.py:function`."""
    where, _, name = spec.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise SwiftkitError(f"--reward {spec}: no file {path}")
        module_spec = importlib.util.spec_from_file_location(f"swiftkit_user_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        sys.modules[module_spec.name] = module  # type: ignore[union-attr]
        try:
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:  # the user's file: any error is theirs to see, in one line
            raise SwiftkitError(f"--reward {spec}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise SwiftkitError(f"--reward {spec}: cannot import {where} ({exc})", "give module:function or FILE.py:function") from None
    func = getattr(module, name, None)
    if not callable(func):
        raise SwiftkitError(f"--reward {spec}: {where} has no function {name!r}")
    return func


def build_rewards(cfg, load_models: bool = True) -> tuple[list[Any], list[Any], list[str]]:
    """(reward functions or models, their processing classes, display names) for TRL's GRPOTrainer.

    Without `load_models` a reward-model artifact is only checked (the fail-fast pass before training)."""
    check_answer_format(cfg.answer_format)
    funcs: list[Any] = []
    tokenizers: list[Any] = []
    names: list[str] = []
    for spec in cfg.reward:
        tokenizer = None
        if spec == "exact_match":
            func = exact_match(cfg.answer_format)
        elif spec == "format":
            func = answer_format_reward(cfg.answer_format, cfg.format_regex)
        elif spec == "json":
            func = json_reward(cfg.json_schema)
        elif spec == "code_tests":
            func = code_reward(cfg.allow_code_execution)
        elif spec.startswith("rm:"):
            func, tokenizer = reward_model(spec[3:], cfg.dtype, load_models)
        elif ":" in spec:
            func = user_reward(spec)
        else:
            raise SwiftkitError(
                f"--reward {spec}: unknown reward",
                f"built-in: {', '.join(BUILT_IN)}; or module:function, FILE.py:function, rm:ARTIFACT",
            )
        funcs.append(func)
        tokenizers.append(tokenizer)
        names.append(spec)
    if cfg.reward_weights and len(cfg.reward_weights) != len(funcs):
        raise SwiftkitError(
            f"--reward-weights gives {len(cfg.reward_weights)} weights for {len(funcs)} rewards", "give one weight per --reward"
        )
    return funcs, tokenizers, names


def reward_model(path: str, dtype: str, load: bool = True):
    """A `swiftkit rm` artifact as a TRL reward model (a sequence classifier and its tokenizer); (None, None)
    when only checking."""
    from swiftkit.artifacts import read_manifest
    from swiftkit.resolve import resolve_model_ref

    mref = resolve_model_ref(path)
    manifest = read_manifest(mref.path)
    if manifest is None or manifest.stage != "rm":
        raise SwiftkitError(f"--reward rm:{path}: not a reward-model artifact", "train one with `swiftkit rm`")
    if not load:
        return None, None
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from swiftkit.loading import torch_dtype

    model = AutoModelForSequenceClassification.from_pretrained(mref.path, dtype=torch_dtype(dtype))
    model.eval().requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(mref.path)
