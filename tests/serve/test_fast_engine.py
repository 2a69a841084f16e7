"""The fast engine (own forward, static slot cache) against the plain transformers one, on the toy in fp32.

Requests arrive while others run, finish at different lengths and queue for slots, so prefill
batches, compaction moves and the scratch slot are all exercised; both engines must produce the
same tokens, the same prompt logprobs and the same seeded samples.
"""

from __future__ import annotations

import json

import pytest
import torch

from swiftkit.serve.engine.engine import Engine, EngineOptions
from swiftkit.serve.engine.request import Request, SamplingParams


@pytest.fixture(scope="module")
def toy(toy_model):
    from swiftkit.loading import load_model

    model, tokenizer, _ = load_model(str(toy_model), dtype="float32", device="cpu")
    rows = [json.loads(line) for line in (toy_model / "task" / "heldout.jsonl").read_text().splitlines()[:20]]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False,
                                             add_generation_prompt=True) for r in rows]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return model, tokenizer, [x + x[: (i * 7) % 23] for i, x in enumerate(ids)]  # prompts of varied length


def generate(toy, engine: str, params: list[SamplingParams], max_num_seqs: int = 6, **options) -> list[Request]:
    """Run every prompt through one engine (stepped here, no thread), a third of them arriving late."""
    model, tokenizer, prompts = toy
    eng = Engine(model, tokenizer, [tokenizer.eos_token_id], EngineOptions(max_num_seqs=max_num_seqs,
                                                                             max_model_len=256, engine=engine, **options))
    outputs: dict[str, list] = {}
    requests = [Request(list(p), sp, sink=lambda o: outputs.setdefault(o.request_id, []).append(o))
                for p, sp in zip(prompts, params, strict=True)]
    late = len(requests) // 3
    for r in requests[:-late]:
        eng.submit(r)
    steps = 0

    def arrive_late() -> None:
        nonlocal steps
        steps += 1
        if steps == 3:
            for r in requests[-late:]:
                eng.submit(r)

    eng.drain(arrive_late)
    assert all(outputs[r.request_id][-1].finished for r in requests)
    return requests


def test_fast_engine_is_chosen_for_the_toy_and_plain_on_request(toy):
    model, tokenizer, _ = toy
    fast = Engine(model, tokenizer, [0], EngineOptions(max_num_seqs=2, max_model_len=64))
    slots = Engine(model, tokenizer, [0], EngineOptions(max_num_seqs=2, max_model_len=64, kv_cache="slots"))
    plain = Engine(model, tokenizer, [0], EngineOptions(max_num_seqs=2, max_model_len=64, engine="plain"))
    assert type(fast.runner).__name__ == "PagedRunner"  # the CPU default: the fast forward over paged KV
    assert type(slots.runner).__name__ == "FastRunner" and type(plain.runner).__name__ == "ModelRunner"


def test_greedy_tokens_equal_the_plain_engine(toy):
    n = len(toy[2])
    params = [SamplingParams(max_tokens=4 + (i * 13) % 60, temperature=0.0, ignore_eos=True,
                             prompt_logprobs=2 if i % 5 == 0 else None) for i in range(n)]
    fast, plain = generate(toy, "fast", params, kv_cache="slots"), generate(toy, "plain", params)
    assert [r.output_ids for r in fast] == [r.output_ids for r in plain]
    assert sum(len(r.output_ids) for r in fast) > 500


def test_seeded_sampling_equals_the_plain_engine(toy):
    n = len(toy[2])
    params = [SamplingParams(max_tokens=24, temperature=0.9, top_p=0.9, top_k=20, seed=100 + i, ignore_eos=True,
                             repetition_penalty=1.1) for i in range(n)]
    fast = generate(toy, "fast", params, max_num_seqs=4, kv_cache="slots")
    plain = generate(toy, "plain", params, max_num_seqs=4)
    assert [r.output_ids for r in fast] == [r.output_ids for r in plain]
    assert len({tuple(r.output_ids) for r in fast}) > n // 2  # really sampled, not collapsed to one answer


def test_fast_runner_prompt_logprobs_match_plain(toy):
    from swiftkit.serve.engine.fast_runner import FastRunner
    from swiftkit.serve.engine.runner import ModelRunner

    model, _, prompts = toy
    batch = [Request(list(p), SamplingParams(), sink=None) for p in prompts[:5]]
    last_f, full_f = FastRunner(model, 8, 256).prefill(batch, 0, all_logits=True)
    starts_f = [r.kv_start for r in batch]
    last_p, full_p = ModelRunner(model, 8, 256).prefill(batch, 0, all_logits=True)
    torch.testing.assert_close(last_f, last_p, atol=1e-4, rtol=1e-4)
    for b, r in enumerate(batch):
        n = len(r.prompt_ids)
        torch.testing.assert_close(full_f[b, starts_f[b]:starts_f[b] + n], full_p[b, r.kv_start:r.kv_start + n],
                                   atol=1e-4, rtol=1e-4)


def test_fast_engine_refuses_what_it_cannot_run_and_auto_falls_back(toy, tmp_path):
    import copy

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Qwen3Config

    from swiftkit.errors import SwiftkitError

    model, tokenizer, _ = toy
    # Plain LoRAs run on the fast path with either cache (test_multi_lora_fast); a DoRA one cannot be stacked for
    # the slot cache's graphs.
    dora = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)).eval()
    with pytest.raises(SwiftkitError, match="LoRA variants"):
        Engine(dora, tokenizer, [0], EngineOptions(max_num_seqs=2, max_model_len=64, engine="fast", kv_cache="slots"),
               multi_adapter=True)
    qwen3 = AutoModelForCausalLM.from_config(Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                                         head_dim=32)).eval()
    with pytest.raises(SwiftkitError, match="architecture 'qwen3'"):
        Engine(qwen3, tokenizer, [0], EngineOptions(max_num_seqs=2, max_model_len=64, engine="fast"))
    auto = Engine(qwen3, tokenizer, [0], EngineOptions(max_num_seqs=2, max_model_len=64))
    assert type(auto.runner).__name__ == "ModelRunner"
