"""The CLI contract: every command listed, flags from configs, one-line errors, YAML + flag precedence."""

from __future__ import annotations

from tests.conftest import run_cli

CONTRACT_COMMANDS = ("download", "sft", "dpo", "merge", "quantize", "eval", "serve", "infer", "chat", "run", "info", "toy", "bench")


def test_help_lists_every_contract_command():
    proc = run_cli("--help", check=True)
    for name in CONTRACT_COMMANDS:
        assert f" {name} " in proc.stdout, name


def test_stage_help_shows_shared_flags_and_defaults():
    proc = run_cli("sft", "--help", check=True, env={"COLUMNS": "200"})
    for flag in ("--model", "--data", "--output", "--config", "--max-length", "--seed", "--dtype", "--trust-remote-code"):
        assert flag in proc.stdout, flag
    assert "[default: 42]" in proc.stdout


def test_missing_required_option_is_one_line():
    proc = run_cli("sft", "--data", "x.jsonl")
    assert proc.returncode == 2
    assert "--model: Field required" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_yaml_config_names_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\ndata: [unclosed\n")
    proc = run_cli("sft", "--config", bad)
    assert proc.returncode == 2
    assert "invalid YAML" in proc.stderr and "line" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_yaml_key_is_reported_as_flag(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: x\ndata: [y]\nlearning_rate_typo: 1\n")
    proc = run_cli("sft", "--config", cfg)
    assert proc.returncode == 2
    assert "--learning-rate-typo: unknown option" in proc.stderr


def test_flags_override_config_file(toy_model, tmp_path):
    """info reads its model from YAML, and the flag given on the command line wins over it."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {tmp_path / 'missing'}\njson-output: true\n")
    assert run_cli("info", "--config", cfg).returncode == 2
    proc = run_cli("info", toy_model, "--config", cfg, check=True)
    assert '"stage": "toy"' in proc.stdout  # json_output came from the file


def test_wrong_model_path_is_actionable(tmp_path):
    proc = run_cli("merge", "--model", tmp_path / "nope")
    assert proc.returncode == 2
    assert "model not found" in proc.stderr and "hint:" in proc.stderr
