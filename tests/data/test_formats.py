"""--data formats, mixing, column mapping and the errors bad rows give (through load_training_data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swiftkit.data.dataset import fingerprint, load_training_data
from swiftkit.errors import DataError

CHAT = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    "row",
    [
        {"messages": CHAT},
        {"messages": [CHAT[0] | {"content": [{"type": "text", "text": "What is 2 + 3?"}]}, CHAT[1]]},
        {"conversations": [{"from": "human", "value": "What is 2 + 3?"}, {"from": "gpt", "value": "5"}]},
        {"instruction": "What is 2 + 3?", "input": "", "output": "5"},
        {"prompt": "What is 2 + 3?", "completion": "5"},
        {"prompt": [CHAT[0]], "completion": [CHAT[1]]},
    ],
    ids=["openai", "openai-parts", "sharegpt", "alpaca", "prompt-completion", "prompt-completion-lists"],
)
def test_sft_formats_normalise_to_the_same_messages(tmp_path, row):
    data = load_training_data([write_jsonl(tmp_path / "d.jsonl", [row])], "sft")
    assert data.rows == [{"messages": CHAT}]


def test_alpaca_input_and_system_are_kept(tmp_path):
    row = {"system": "Be brief.", "instruction": "Add.", "input": "2 and 3", "output": "5"}
    data = load_training_data([write_jsonl(tmp_path / "d.jsonl", [row])], "sft")
    assert data.rows[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]


PREF = {"prompt": [CHAT[0]], "chosen": [CHAT[1]], "rejected": [{"role": "assistant", "content": "6"}]}


@pytest.mark.parametrize(
    "row",
    [
        PREF,
        {"prompt": "What is 2 + 3?", "chosen": "5", "rejected": "6"},
        {
            "chosen": "\n\nHuman: What is 2 + 3?\n\nAssistant: 5",
            "rejected": "\n\nHuman: What is 2 + 3?\n\nAssistant: 6",
        },
        {"chosen": CHAT, "rejected": [CHAT[0], {"role": "assistant", "content": "6"}]},
    ],
    ids=["lists", "strings", "hh-rlhf", "full-conversations"],
)
def test_preference_formats(tmp_path, row):
    data = load_training_data([write_jsonl(tmp_path / "p.jsonl", [row])], "preference")
    assert data.rows == [PREF]


def test_hh_rlhf_multi_turn_prompt_is_the_shared_prefix(tmp_path):
    shared = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: What is 2 + 3?"
    row = {"chosen": shared + "\n\nAssistant: 5", "rejected": shared + "\n\nAssistant: 6"}
    data = load_training_data([write_jsonl(tmp_path / "p.jsonl", [row])], "preference")
    assert [m["role"] for m in data.rows[0]["prompt"]] == ["user", "assistant", "user"]
    assert data.rows[0]["chosen"] == [{"role": "assistant", "content": "5"}]


def test_csv_parquet_json_and_mixing(tmp_path):
    import pandas as pd

    rows = [{"prompt": f"What is {i} + 1?", "completion": str(i + 1)} for i in range(10)]
    pd.DataFrame(rows).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "b.parquet")
    (tmp_path / "c.json").write_text(json.dumps(rows))
    data = load_training_data(
        [f"{tmp_path / 'a.csv'}#3", f"{tmp_path / 'b.parquet'}#15", str(tmp_path / "c.json")], "sft"
    )
    assert len(data.rows) == 3 + 15 + 10  # #15 from 10 rows oversamples
    assert data.manifest_entry()["rows"] == 28
    assert data.rows[-1] == {
        "messages": [{"role": "user", "content": "What is 9 + 1?"}, {"role": "assistant", "content": "10"}]
    }
    again = load_training_data(
        [f"{tmp_path / 'a.csv'}#3", f"{tmp_path / 'b.parquet'}#15", str(tmp_path / "c.json")], "sft"
    )
    assert again.fingerprint == data.fingerprint == fingerprint(data.rows)  # seeded sampling: reproducible
    other_seed = load_training_data([f"{tmp_path / 'a.csv'}#3"], "sft", seed=7)
    assert other_seed.fingerprint != load_training_data([f"{tmp_path / 'a.csv'}#3"], "sft").fingerprint


def test_column_mapping(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "What is 2 + 3?", "answer": "5"}])
    data = load_training_data([path], "sft", columns=["prompt=question", "completion=answer"])
    assert data.rows == [{"messages": CHAT}]
    with pytest.raises(DataError, match="column 'query' named in --columns is missing"):
        load_training_data([path], "sft", columns=["prompt=query"])


@pytest.mark.parametrize(
    "rows, kind, message",
    [
        ([{"messages": CHAT}, {"text": "hi"}], "sft", r"d.jsonl row 2: no SFT columns found \(has: text\)"),
        (
            [{"messages": [CHAT[0], {"role": "assistant", "content": "  "}]}],
            "sft",
            r"row 1: conversation turn 2 \(assistant\) is empty",
        ),
        (
            [{"messages": [{"role": "robot", "content": "x"}, CHAT[1]]}],
            "sft",
            "turn 1 has unknown role 'robot'",
        ),
        ([{"messages": [CHAT[0]]}], "sft", "must end with an assistant turn"),
        (
            [{"messages": [CHAT[0], {"role": "system", "content": "x"}, CHAT[1]]}],
            "sft",
            "system message may only come first",
        ),
        ([{"conversations": [{"from": "alien", "value": "x"}]}], "sft", "unknown speaker 'alien'"),
        ([{"prompt": "q", "chosen": "a"}], "preference", "needs chosen and rejected columns"),
        (
            [{"prompt": "q", "chosen": "a", "rejected": ""}],
            "preference",
            "rejected turn 2 .assistant. is empty",
        ),
        ([{"chosen": "Human says hi", "rejected": "no"}], "preference", "is not an hh-rlhf transcript"),
    ],
    ids=[
        "missing-columns",
        "empty-turn",
        "wrong-role",
        "no-reply",
        "system-late",
        "sharegpt-speaker",
        "no-rejected",
        "empty-rejected",
        "not-hh",
    ],
)
def test_bad_rows_name_file_row_and_problem(tmp_path, rows, kind, message):
    with pytest.raises(DataError, match=message):
        load_training_data([write_jsonl(tmp_path / "d.jsonl", rows)], kind)


def test_broken_json_line_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"d.jsonl row 2: invalid JSON"):
        load_training_data([str(path)], "sft")


def test_missing_file_and_unreachable_hub_id_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_training_data([str(tmp_path / "nope.jsonl")], "sft")
    with pytest.raises(DataError, match="cannot load dataset 'nobody/no-such-dataset'"):
        load_training_data(["nobody/no-such-dataset#10"], "sft")
