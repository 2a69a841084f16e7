"""Atomic artifact writes, manifests and model references."""

from __future__ import annotations

import json

import pytest

from swiftkit.artifacts import Manifest, artifact_writer, read_manifest, write_manifest
from swiftkit.errors import ArtifactError
from swiftkit.resolve import resolve_model_ref


def test_failed_stage_leaves_nothing_complete(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(RuntimeError), artifact_writer(out) as tmp:
        (tmp / "weights.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_partial_kept_for_resume_but_not_complete(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(RuntimeError), artifact_writer(out, keep_partial=True) as tmp:
        (tmp / "checkpoint").mkdir()
        raise RuntimeError("killed")
    assert not out.exists()
    (partial,) = tmp_path.iterdir()
    assert partial.name.startswith(".") and read_manifest(partial) is None


def test_success_renames_and_refuses_overwrite(tmp_path):
    out = tmp_path / "art"
    with artifact_writer(out) as tmp:
        write_manifest(tmp, Manifest(kind="model", stage="test"))
    assert read_manifest(out).stage == "test"
    with pytest.raises(ArtifactError, match="already exists"), artifact_writer(out):
        pass
    with artifact_writer(out, overwrite=True) as tmp:
        write_manifest(tmp, Manifest(kind="model", stage="again"))
    assert read_manifest(out).stage == "again"


def test_newer_schema_is_refused(tmp_path):
    (tmp_path / "swiftkit.json").write_text(json.dumps({"schema_version": 99, "kind": "model", "stage": "x"}))
    with pytest.raises(ArtifactError, match="newer"):
        read_manifest(tmp_path)


def test_adapter_chain_resolves_to_base(tmp_path, toy_model):
    sft = tmp_path / "sft"
    sft.mkdir()
    write_manifest(sft, Manifest(kind="adapter", stage="sft", base_model=str(toy_model), parents=[str(toy_model)]))
    dpo = tmp_path / "dpo"
    dpo.mkdir()
    write_manifest(dpo, Manifest(kind="adapter", stage="dpo", base_model=str(toy_model), adapter_chain=[str(sft)], parents=[str(sft)]))
    ref = resolve_model_ref(dpo)
    assert ref.base_path == toy_model.resolve()
    assert ref.adapters == [sft.resolve(), dpo.resolve()]


def test_eval_artifact_is_not_a_model(tmp_path, toy_model):
    write_manifest(tmp_path, Manifest(kind="eval", stage="eval", target=str(toy_model)))
    with pytest.raises(ArtifactError, match="evaluation artifact"):
        resolve_model_ref(tmp_path)
