"""swiftkit grpo and distill on the toy: real TRL steps through the CLI; rollouts on swiftkit's engine
checked token for token against TRL's own generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import WIDE, assert_one_line_error, run_cli
from tests.train.conftest import manifest


def _grpo_args(toy: Path) -> list[str]:
    # Measured from the sft_adapter fixture (docs/align.md): held-out greedy exact match 0.396 -> 0.450,
    # 0.433 and 0.445 over three seeds with these settings (the defaults otherwise: dapo loss, beta 0.04).
    return [
        "--data", f"{toy}/task/sft.jsonl", "--eval-data", f"{toy}/task/heldout.jsonl", "--eval-rows", "409",
        "--max-completion-length", "6", "--num-generations", "16", "--batch-size", "32", "--temperature", "0.5",
        "--lr", "3e-4", "--logging-steps", "50",
    ]  # fmt: skip


def test_engine_rollouts_equal_trl_generation(sft_adapter):
    """Greedy rollouts on swiftkit's engine = TRL's own generate path, on the same PEFT-wrapped policy."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig

    from swiftkit.loading import load_model, load_tokenizer
    from swiftkit.resolve import resolve_model_ref
    from swiftkit.train.common import lora_config
    from swiftkit.train.config import GRPOConfig as OurConfig
    from swiftkit.train.grpo import _trainer_class
    from swiftkit.train.rollouts import EngineRollouts

    mref = resolve_model_ref(str(sft_adapter))
    model, tokenizer = load_model(mref)[0], load_tokenizer(mref)
    questions = ["What is the larger of 12 and 85?", "What is the larger of 70 and 7?", "What is the larger of 33 and 34?"]
    rows = [{"prompt": [{"role": "user", "content": q}], "answer": "0"} for q in questions]
    args = GRPOConfig(output_dir="/tmp/unused", per_device_train_batch_size=4, num_generations=2, max_completion_length=12,
                      use_cpu=True, report_to="none", generation_kwargs={"do_sample": False})
    trainer = _trainer_class()(model=model, reward_funcs=lambda prompts, completions, **kw: [0.0] * len(completions), args=args,
                               train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                               peft_config=lora_config(OurConfig(model="m", data=["d"])))
    # A trained-looking LoRA, so the check covers the adapter path, not only the base weights.
    torch.manual_seed(0)
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.02)
    prompt_ids = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
                  for r in rows]
    trl_ids, _ = trainer._generate_single_turn(prompt_ids, None, {}, 1)  # rollouts unset: TRL's generate
    engine = EngineRollouts(trainer.model, tokenizer, trainer.eos_token_ids, 8, 64, full_finetune=False, seed=0)
    ours = engine.generate(prompt_ids, 12, 1.0, greedy=True)
    assert [list(map(int, ids)) for ids in trl_ids] == ours
    assert any(ids[-1] in trainer.eos_token_ids for ids in ours)  # a stopped completion keeps its eos, as TRL's
    # Weights change in place (an optimizer step): the engine reads them, no stale prefix cache.
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    trl_after, _ = trainer._generate_single_turn(prompt_ids, None, {}, 1)
    assert [list(map(int, ids)) for ids in trl_after] == engine.generate(prompt_ids, 12, 1.0, greedy=True)
    assert trl_after != trl_ids


def test_grpo_raises_heldout_exact_match_over_sft(toy_model, sft_adapter, tmp_path):
    out = tmp_path / "grpo"
    proc = run_cli("grpo", "--model", sft_adapter, *_grpo_args(toy_model), "--max-steps", "150", "--rollout-engine", "swiftkit",
                   "--output", out, check=True, env={"COLUMNS": "200"})
    m = manifest(out)
    metrics = m["metrics"]
    before, after = metrics["eval_reward/exact_match_before"], metrics["eval_reward/exact_match_after"]
    assert after >= before + 0.03, metrics
    assert metrics["rollout_engine"] == "swiftkit" and metrics["rollout_tokens"] > 0 and 0 < metrics["rollout_share"] < 1
    assert m["kind"] == "adapter" and m["stage"] == "grpo" and m["parents"] == [str(sft_adapter)]
    assert "held-out reward/exact_match (greedy)" in proc.stdout + proc.stderr
    # The artifact's own score: swiftkit eval on the same held-out rows agrees with the recorded greedy measure.
    ev = tmp_path / "eval"
    run_cli("eval", "--model", out, "--tasks", "toy_arithmetic", "--data-dir", f"{toy_model}/task", "--output", ev, check=True)
    scored = manifest(ev)["metrics"]["scores"]
    assert abs(scored["toy_arithmetic"] - after) < 0.01, scored


def test_distill_brings_the_student_towards_the_teacher(toy_model, sft_adapter, tmp_path):
    # Teacher: the quickstart's longer SFT (held-out exact match ~0.7); student: the short sft_adapter (~0.4).
    teacher = tmp_path / "teacher"
    run_cli("sft", "--model", toy_model, "--data", f"{toy_model}/task/sft.jsonl", "--max-steps", "300", "--batch-size", "16",
            "--lr", "2e-3", "--output", teacher, check=True)
    out = tmp_path / "distill"
    run_cli("distill", "--model", sft_adapter, "--teacher", teacher, "--data", f"{toy_model}/task/sft.jsonl",
            "--eval-data", f"{toy_model}/task/heldout.jsonl", "--max-completion-length", "4", "--max-steps", "150",
            "--batch-size", "16", "--lr", "1e-3", "--beta", "0", "--output", out, check=True)
    m = manifest(out)
    metrics = m["metrics"]
    # Measured (docs/align.md): agreement 0.41 -> 0.66, exact match 0.42 -> 0.59, teacher 0.71.
    assert metrics["eval_agreement_after"] >= metrics["eval_agreement_before"] + 0.15, metrics
    assert metrics["eval_exact_match_after"] >= metrics["eval_exact_match_before"] + 0.1, metrics
    assert metrics["eval_exact_match_after"] >= metrics["teacher_exact_match"] - 0.2, metrics
    assert metrics["teacher"] == str(teacher) and m["stage"] == "distill" and m["parents"] == [str(sft_adapter)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "12", "--num-generations", "8"], "not a whole number of groups"),
        (["--reward", "code_tests"], "runs model-written code"),
        (["--reward", "bogus"], "unknown reward"),
        (["--loss-type", "ppo"], "not a GRPO loss"),
    ],
)
def test_grpo_bad_options_fail_in_one_line(toy_model, tmp_path, args, message):
    out = tmp_path / "bad"
    proc = run_cli("grpo", "--model", toy_model, "--data", f"{toy_model}/task/sft.jsonl", *args, "--output", out, env=WIDE)
    assert_one_line_error(proc, message)
    assert not out.exists()


def test_grpo_data_without_prompts_fails_in_one_line(toy_model, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"text": "no prompt"}) + "\n")
    proc = run_cli("grpo", "--model", toy_model, "--data", data, "--output", tmp_path / "o", env=WIDE)
    assert_one_line_error(proc, "no prompt columns found")


def test_reward_model_artifact_as_a_grpo_reward_and_refused_as_a_generator(toy_model, sft_adapter, tmp_path):
    rm = tmp_path / "rm"
    run_cli("rm", "--model", sft_adapter, "--data", f"{toy_model}/task/dpo.jsonl#240", "--max-steps", "30", "--lr", "3e-3",
            "--batch-size", "8", "--eval-data", f"{toy_model}/task/heldout_pref.jsonl", "--output", rm, check=True)
    proc = run_cli("export", "--model", rm, "--quant", "f16", "--output", tmp_path / "gguf", env=WIDE)
    assert_one_line_error(proc, "is a reward model")
    assert f"--reward rm:{rm}" in proc.stderr  # the hint says what to do with it
    # Serving it fails in the engine process; the message still says why.
    assert "is a reward model" in run_cli("smoke", "--model", rm, env=WIDE).stderr
    # swiftkit eval reports its held-out pair accuracy, as the rm manifest recorded it on the same pairs.
    held = toy_model / "task" / "heldout_pref.jsonl"
    run_cli("eval", "--model", rm, "--tasks", "pair_accuracy", "--data", held, "--output", tmp_path / "eval-rm", check=True)
    scored = manifest(tmp_path / "eval-rm")["metrics"]
    assert scored["scores"]["pair_accuracy"] == manifest(rm)["metrics"]["pair_accuracy_after"] > 0.6, scored
    assert scored["pairs"] == len(held.read_text().splitlines()), scored
    wrong = run_cli("eval", "--model", rm, "--tasks", "toy_arithmetic", "--output", tmp_path / "e2", env=WIDE)
    assert_one_line_error(wrong, "is a reward model: it is scored with --tasks pair_accuracy only")
    out = tmp_path / "grpo-rm"
    run_cli("grpo", "--model", sft_adapter, "--data", f"{toy_model}/task/sft.jsonl#64", "--eval-data", f"{toy_model}/task/heldout.jsonl#16",
            "--reward", f"rm:{rm}", "--reward", "exact_match", "--reward-weights", "0.5", "--reward-weights", "1",
            "--max-steps", "2", "--batch-size", "16", "--max-completion-length", "6", "--output", out, check=True)
    metrics = manifest(out)["metrics"]
    rm_score, exact = metrics[f"eval_reward/rm:{rm}_before"], metrics["eval_reward/exact_match_before"]
    # The weighted total is what the weights say.
    assert abs(metrics["eval_reward_before"] - (0.5 * rm_score + exact)) < 1e-4, metrics
    assert metrics["rollout_engine"] == "trl"  # the CPU default
