"""`swiftkit run`: references, validation, fingerprint caching, --from, failures that keep earlier artifacts."""

from __future__ import annotations

import json

from tests.conftest import ROOT, run_cli

TINY_TOY = "    pretrain_steps: 2\n    layers: 1\n"


def write_recipe(path, body: str):
    path.write_text(body)
    return path


def test_quickstart_dry_run_validates_every_stage(tmp_path):
    proc = run_cli("run", ROOT / "recipes" / "quickstart.yaml", "--dry-run", "--workdir", tmp_path, check=True)
    for stage in ("base", "sft", "dpo", "merged", "gptq", "eval", "serve"):
        assert stage in proc.stdout
    assert not any(tmp_path.iterdir())  # nothing ran


def test_unknown_reference_and_command_are_clear(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "stages:\n  - name: a\n    command: merge\n    model: '@nowhere'\n")
    proc = run_cli("run", recipe, "--dry-run")
    assert proc.returncode == 2 and "not an earlier stage" in proc.stderr and "line 4" in proc.stderr
    recipe = write_recipe(tmp_path / "r2.yaml", "stages:\n  - name: a\n    command: frobnicate\n")
    proc = run_cli("run", recipe, "--dry-run")
    assert proc.returncode == 2 and "unknown command `frobnicate`" in proc.stderr and "line 3" in proc.stderr
    recipe = write_recipe(tmp_path / "r3.yaml", "stages:\n  - name: a\n    command: toy\n    pretrain_stepz: 3\n")
    proc = run_cli("run", recipe, "--dry-run")
    assert proc.returncode == 2 and "--pretrain-stepz: unknown option" in proc.stderr and "line 4" in proc.stderr


def test_bad_last_stage_fails_before_any_work(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        (
            "stages:\n  - name: base\n    command: toy\n"
            + TINY_TOY
            + "  - name: sft\n    command: sft\n    model: '@base'\n    data: [x.jsonl]\n    max_stepz: 3\n"
        ),
    )
    proc = run_cli("run", recipe, "--workdir", tmp_path / "work")
    assert proc.returncode == 2 and "line 10" in proc.stderr and "--max-stepz: unknown option" in proc.stderr
    assert not (tmp_path / "work").exists()  # the toy stage never ran


def test_cache_from_and_failure_keep_earlier_artifacts(tmp_path):
    recipe = write_recipe(
        tmp_path / "r.yaml",
        (
            "name: t\nstages:\n  - name: base\n    command: toy\n"
            + TINY_TOY
            + "  - name: sft\n    command: sft\n    model: '@base'\n    data: ['@base/task/missing.jsonl']\n"
        ),
    )
    work = tmp_path / "work"
    proc = run_cli("run", recipe, "--workdir", work)
    assert proc.returncode == 2
    assert "stage `sft` (sft) failed" in proc.stderr
    base_manifest = work / "base" / "swiftkit.json"
    assert base_manifest.is_file()
    built_at = json.loads(base_manifest.read_text())["created_at"]

    # Re-run with only the base stage: cached, untouched.
    proc = run_cli("run", recipe, "--workdir", work, "--only", "base", check=True)
    assert "cached" in proc.stdout
    assert json.loads(base_manifest.read_text())["created_at"] == built_at

    # --from forces a re-run; a changed field changes the fingerprint too.
    proc = run_cli("run", recipe, "--workdir", work, "--only", "base", "--from", "base", check=True)
    assert "ran" in proc.stdout
    proc = run_cli("run", recipe, "--workdir", work, "--only", "base", "--set", "base.seed=7", check=True)
    assert "ran" in proc.stdout
    assert json.loads(base_manifest.read_text())["config"]["seed"] == 7


def test_recipe_list_and_copy(tmp_path):
    proc = run_cli("recipe", "list", check=True, env={"COLUMNS": "200"})
    assert "quickstart" in proc.stdout
    dest = tmp_path / "mine.yaml"
    run_cli("recipe", "cp", "quickstart", dest, check=True)
    assert dest.read_text() == (ROOT / "recipes" / "quickstart.yaml").read_text()
    assert run_cli("recipe", "cp", "quickstart", dest).returncode == 2


def test_every_bundled_recipe_validates(tmp_path):
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        proc = run_cli("run", recipe, "--dry-run", "--workdir", tmp_path / recipe.stem)
        assert proc.returncode == 0, f"{recipe.name}: {proc.stderr}"
        assert "valid" in proc.stdout


def test_stage_commands_are_not_shadowed_by_subcommands(tmp_path):
    """`serve` in a recipe is the server (not `bench serve`); sub-commands are addressed with their group."""
    recipe = write_recipe(
        tmp_path / "r.yaml",
        "stages:\n  - name: s\n    command: serve\n    model: m\n    max_model_len: 512\n"
        "  - name: b\n    command: bench serve\n    url: http://127.0.0.1:1\n",
    )
    proc = run_cli("run", recipe, "--dry-run", env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "bench serve" in proc.stdout
