"""`--engine vllm`: its own checks. The whole of tests/serve runs against it with `make test-vllm`
(SWIFTKIT_TEST_ENGINE=vllm); without vllm installed only the "not installed" errors are tested here."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from swiftkit.artifacts import Manifest, read_manifest, write_manifest
from tests.conftest import run_cli
from tests.serve.conftest import ENGINE, free_port
from tests.serve.test_openai_api import visible_text

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (`make test-vllm` builds a venv with it)")


def cli_args(command: str, tmp_path) -> list:
    if command == "serve":
        return ["--port", str(free_port())]
    if command == "infer":
        data = tmp_path / "prompts.jsonl"
        data.write_text(json.dumps({"prompt": "1 + 2 ="}) + "\n")
        return ["--data", data]
    return []


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
@pytest.mark.parametrize("command", ["serve", "infer", "chat"])
def test_engine_vllm_without_vllm_is_one_line_error(toy_model, tmp_path, command):
    proc = run_cli(command, "--model", toy_model, "--engine", "vllm", *cli_args(command, tmp_path), timeout=120)
    assert proc.returncode == 2 and "install vllm" in proc.stderr and "Traceback" not in proc.stderr


@needs_vllm
def test_infer_through_vllm_equals_in_process_greedy(toy_model, tmp_path, reference):
    """`swiftkit infer --engine vllm` (the same thread-hosted engine `chat` uses)."""
    data = tmp_path / "prompts.jsonl"
    rows = [{"id": "a", "prompt": "12 + 34 ="}, {"id": "b", "prompt": "5 + 6 ="}, {"id": "c", "question": "What is 1 + 2?"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "results.jsonl"
    run_cli("infer", "--model", toy_model, "--engine", "vllm", "--dtype", "float32", "--data", data, "--output", out,
            "--max-tokens", "8", check=True, timeout=600)
    results = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(results) == ["a", "b", "c"]
    tok = reference.tokenizer
    for rid in ("a", "b"):
        ids = tok(rows["ab".index(rid)]["prompt"])["input_ids"]
        expected = reference(ids, results[rid]["completion_tokens"])
        assert results[rid]["response"] == visible_text(tok, expected), rid
    assert all(r["finish_reason"] in ("stop", "length") and 1 <= r["completion_tokens"] <= 8 for r in results.values())


@needs_vllm
def test_sampling_params_map_to_vllm(toy_model):
    from vllm.sampling_params import RequestOutputKind

    from swiftkit.serve.config import ServeConfig
    from swiftkit.serve.engine.request import SamplingParams
    from swiftkit.serve.engine.vllm import VLLMEngine
    from swiftkit.serve.model import load_served_model

    cfg = ServeConfig(model=str(toy_model))
    served = load_served_model(cfg, weights=False)
    engine = VLLMEngine(cfg, served)  # not started: only the mapping
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    p = SamplingParams(max_tokens=7, temperature=0.5, top_p=0.9, top_k=3, min_p=0.1, seed=11, presence_penalty=0.5,
                       frequency_penalty=0.25, repetition_penalty=1.2, logit_bias={7: 2.0}, min_tokens=2,
                       stop=["xyz"], stop_token_ids=[5], logprobs=2, prompt_logprobs=1, constraint=("json_schema", schema))
    v = engine.vllm_params(p)
    assert (v.max_tokens, v.temperature, v.top_p, v.top_k, v.min_p, v.seed) == (7, 0.5, 0.9, 3, 0.1, 11)
    assert (v.presence_penalty, v.frequency_penalty, v.repetition_penalty) == (0.5, 0.25, 1.2)
    assert v.logit_bias == {7: 2.0} and v.min_tokens == 2 and (v.logprobs, v.prompt_logprobs) == (2, 1)
    # the manifest's eos ids join the request's own stop ids; stop strings and text stay on swiftkit's side
    assert v.stop_token_ids[0] == 5 and set(v.stop_token_ids) == {5, *served.eos_ids}
    assert not v.stop and v.detokenize is False and v.output_kind is RequestOutputKind.DELTA
    assert v.structured_outputs.json == schema
    v = engine.vllm_params(SamplingParams(top_k=-1, ignore_eos=True, stop_token_ids=[5], constraint=("json_object", None)))
    assert v.top_k == 0 and v.ignore_eos and v.stop_token_ids == [5]
    assert v.structured_outputs.json == {"type": "object"}


@needs_vllm
def test_adapter_artifact_needs_merge(toy_model, adapters, tmp_path):
    artifact = tmp_path / "sft"
    shutil.copytree(adapters["alpha"], artifact)
    write_manifest(artifact, Manifest(kind="adapter", stage="sft", base_model=str(toy_model), parents=[str(toy_model)],
                                      serving=read_manifest(toy_model).serving))
    proc = run_cli("serve", "--model", artifact, "--engine", "vllm", "--port", str(free_port()), timeout=300)
    assert proc.returncode == 2 and "swiftkit merge" in proc.stderr and "Traceback" not in proc.stderr


@needs_vllm
@pytest.mark.skipif(ENGINE != "vllm", reason="the session server runs vLLM only under SWIFTKIT_TEST_ENGINE=vllm")
def test_session_server_is_vllm(server, client):
    """The rest of tests/serve really ran against vLLM: its engine core logged, its scheduler fed /metrics."""
    r = client.completions.create(model="alpha", prompt="1 + 2 =", max_tokens=4, temperature=0, n=2, extra_body={"ignore_eos": True})
    assert [c.finish_reason for c in r.choices] == ["length", "length"] and r.usage.completion_tokens == 8
    assert "EngineCore" in server.log.read_text()
    assert server.metric("swiftkit_batch_size_count") > 0
