"""Calibration text: chat rows go through the model's own chat template; plain text stays as written."""

from __future__ import annotations

import json

from swiftkit.quant.calibration import build_text_set, read_texts


def _tokenizer(toy_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(toy_model)


def test_chat_rows_are_rendered_with_the_models_template(toy_model):
    tokenizer = _tokenizer(toy_model)
    texts = read_texts([f"{toy_model}/task/sft.jsonl#20"], tokenizer, seed=0)
    rows = [json.loads(line) for line in (toy_model / "task" / "sft.jsonl").read_text().splitlines()]
    rendered = {tokenizer.apply_chat_template(row["messages"], tokenize=False) for row in rows}
    assert len(texts) == 20 and set(texts) <= rendered
    assert all(text.startswith("<|im_start|>user\n") and "<|im_start|>assistant\n" in text for text in texts)


def test_text_rows_and_txt_lines_keep_their_text(toy_model, tmp_path):
    tokenizer = _tokenizer(toy_model)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(3)))
    assert read_texts([str(tmp_path / "rows.jsonl")], tokenizer, seed=0) == ["row 0\n\n", "row 1\n\n", "row 2\n\n"]
    lines = (toy_model / "task" / "calib.txt").read_text().splitlines(keepends=True)
    assert read_texts([str(toy_model / "task" / "calib.txt")], tokenizer, seed=0) == lines


def test_windows_have_the_requested_shape(toy_model):
    texts = build_text_set(
        [str(toy_model / "task" / "calib.txt")],
        [],
        _tokenizer(toy_model),
        n_samples=12,
        max_length=64,
        eval_tokens=300,
        seed=0,
    )
    assert len(texts.samples) == 12 and {len(s) for s in texts.samples} == {64}
    assert sum(len(w) for w in texts.eval_windows) == 300 and max(len(w) for w in texts.eval_windows) <= 64
    assert texts.rows == 360  # 400 lines, 10% held out for the perplexity check
