"""Bad --data through the CLI: one line naming file, row and problem; nothing complete at --output."""

from __future__ import annotations

import json

import pytest

from swiftkit.artifacts import partial_dir
from tests.conftest import run_cli

GOOD = {"messages": [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]}


@pytest.mark.parametrize(
    "command, row, message",
    [
        ("sft", {"question": "hi"}, "bad.jsonl row 2: no SFT columns found (has: question)"),
        (
            "sft",
            {"messages": [GOOD["messages"][0], {"role": "assistant", "content": ""}]},
            "bad.jsonl row 2: conversation turn 2 (assistant) is empty",
        ),
        (
            "sft",
            {"messages": [{"role": "bot", "content": "x"}, GOOD["messages"][1]]},
            "bad.jsonl row 2: conversation turn 1 has unknown role 'bot'",
        ),
        (
            "dpo",
            {"prompt": "What is 2 + 3?", "chosen": "5"},
            "bad.jsonl row 2: preference data needs chosen and rejected",
        ),
    ],
    ids=["sft-missing-columns", "sft-empty-turn", "sft-wrong-role", "dpo-missing-rejected"],
)
def test_bad_rows_fail_cleanly(toy_model, tmp_path, command, row, message):
    good = GOOD if command == "sft" else {"prompt": "q", "chosen": "a", "rejected": "b"}
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    out = tmp_path / "out"
    proc = run_cli(command, "--model", toy_model, "--data", data, "--output", out)
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (partial_dir(out) / "swiftkit.json").exists()


def test_overlength_rows_are_counted_and_skipped(toy_model, tmp_path):
    long = {
        "messages": [
            {"role": "user", "content": "What is " + "1 + " * 200 + "1?"},
            {"role": "assistant", "content": "201"},
        ]
    }
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [GOOD] * 8 + [long] * 2))
    out = tmp_path / "out"
    flags = "--max-length 64 --max-steps 1 --eval-split 0"
    proc = run_cli("sft", "--model", toy_model, "--data", data, *flags.split(), "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 2 of 10 rows longer than --max-length 64" in " ".join(proc.stderr.split())
    m = json.loads((out / "swiftkit.json").read_text())
    assert m["data"]["rows"] == 8 and m["data"]["skipped"] == {"over_max_length": 2}


def test_all_rows_too_long_is_an_error_without_artifact(toy_model, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(GOOD) + "\n")
    out = tmp_path / "out"
    proc = run_cli("sft", "--model", toy_model, "--data", data, "--max-length", 4, "--output", out)
    assert proc.returncode == 2 and "every row is longer than --max-length 4" in proc.stderr
    assert not out.exists()
