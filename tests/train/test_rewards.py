"""GRPO's reward functions and prompt rows: no model needed."""

from __future__ import annotations

import json

import pytest

from swiftkit.data.formats import to_prompt
from swiftkit.data.sources import Row
from swiftkit.errors import DataError, SwiftkitError
from swiftkit.train import rewards
from swiftkit.train.config import GRPOConfig


def _chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    ("text", "spec", "answer"),
    [
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "auto", "72"),
        ("so the total is 1,234.50 dollars", "auto", "1234.5"),
        ("we get \\boxed{\\frac{1}{2}} and 3 more", "auto", "\\frac{1}{2}"),
        ("answer: 7. Then 9", "last_number", "9"),
        ("#### $18.00", "gsm8k", "18"),
        ("no number here", "last_number", None),
        ("Paris", "auto", "Paris"),
        ("The answer is B, not C", "regex:answer is ([A-D])", "B"),
    ],
)
def test_extract_answer(text, spec, answer):
    assert rewards.extract_answer(text, spec) == answer


def test_exact_match_compares_the_extracted_answers():
    reward = rewards.exact_match()
    completions = [_chat("It is 72."), _chat("#### 71"), "72", _chat("")]
    answers = ["Natalia ... #### 72", "72", "72.0", "72"]
    assert reward(None, completions, answer=answers) == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(SwiftkitError, match="no `answer` column"):
        reward(None, completions, tests=answers)


def test_format_and_json_rewards(tmp_path):
    fmt = rewards.answer_format_reward(format_regex=r"<answer>\d+</answer>")
    assert fmt(None, [_chat("<answer>12</answer>"), _chat("12")]) == [1.0, 0.0]
    assert rewards.answer_format_reward()(None, [_chat("so 12"), _chat("none")]) == [1.0, 0.0]

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}))
    valid = rewards.json_reward(str(schema))
    texts = ['{"name": "x"}', '```json\n{"name": "y"}\n```', '{"name": 3}', "not json"]
    assert valid(None, [_chat(t) for t in texts]) == [1.0, 1.0, 0.0, 0.0]
    # Without a file, each row's own schema column.
    per_row = rewards.json_reward()
    assert per_row(None, [_chat('{"a": 1}')] * 2, schema=[json.dumps({"type": "object"}), json.dumps({"type": "array"})]) == [1.0, 0.0]
    schema.write_text('{"type": 12}')
    with pytest.raises(SwiftkitError, match="not a valid JSON schema"):
        rewards.json_reward(str(schema))


def test_code_tests_need_the_explicit_flag_and_run_sandboxed():
    with pytest.raises(SwiftkitError, match="runs model-written code"):
        rewards.code_reward(False)
    reward = rewards.code_reward(True)
    good = "```python\ndef add(a, b):\n    return a + b\n```"
    bad = "def add(a, b):\n    return a - b"
    loops = "def add(a, b):\n    while True: pass"
    tests = "assert add(2, 3) == 5"
    assert reward(None, [_chat(good), _chat(bad), _chat(loops)], tests=[tests, tests, tests + "\nadd(1, 1)"]) == [1.0, 0.0, 0.0]


def test_user_reward_from_a_file_and_bad_specs(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("def short(prompts, completions, **kw):\n    return [1.0 if len(c[0]['content']) < 5 else 0.0 for c in completions]\n")
    cfg = GRPOConfig(model="m", data=["d"], reward=["exact_match", f"{path}:short"], reward_weights=[1.0, 0.5])
    funcs, tokenizers, names = rewards.build_rewards(cfg)
    assert names == ["exact_match", f"{path}:short"] and tokenizers == [None, None]
    assert funcs[1](None, [_chat("ok"), _chat("too long")]) == [1.0, 0.0]
    for spec, message in [
        ("nonsense", "unknown reward"),
        (f"{path}:missing", "has no function 'missing'"),
        ("no_such_module_xyz:f", "cannot import no_such_module_xyz"),
        (f"{tmp_path}/absent.py:f", "no file"),
    ]:
        with pytest.raises(SwiftkitError, match=message):
            rewards.build_rewards(cfg.model_copy(update={"reward": [spec], "reward_weights": []}))
    with pytest.raises(SwiftkitError, match="2 weights for 1 rewards"):
        rewards.build_rewards(cfg.model_copy(update={"reward": ["exact_match"]}))
    with pytest.raises(SwiftkitError, match="answer-format"):
        rewards.build_rewards(cfg.model_copy(update={"answer_format": "regex:(a)(b)", "reward_weights": []}))


def test_prompt_rows_from_each_format():
    gsm = to_prompt(Row({"question": "2 + 3?", "answer": "2 + 3 = 5\n#### 5"}, "f:1"))
    assert gsm == {"prompt": [{"role": "user", "content": "2 + 3?"}], "answer": "2 + 3 = 5\n#### 5"}
    sft = to_prompt(Row({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}, "f:2"))
    assert sft == {"prompt": [{"role": "user", "content": "hi"}], "answer": "hello"}
    pref = to_prompt(Row({"prompt": "max of 3 and 9?", "chosen": "9", "rejected": "3"}, "f:3"))
    assert pref == {"prompt": [{"role": "user", "content": "max of 3 and 9?"}], "answer": "9"}
    own = to_prompt(Row({"prompt": "write add", "tests": "assert add(1, 2) == 3", "answer": "x"}, "f:4"))
    assert own["tests"] == "assert add(1, 2) == 3" and own["answer"] == "x"
    with pytest.raises(DataError, match="f:5: no prompt columns found"):
        to_prompt(Row({"text": "just text"}, "f:5"))
    with pytest.raises(DataError, match="must end with a user"):
        to_prompt(Row({"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "f:6"))
