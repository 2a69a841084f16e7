"""LoRA adapters on the fast engine (paged KV, the CPU default, and the slot cache, the CUDA default): rows of
different adapters and the base in one batch, adapters loaded and unloaded between steps (the last one too), each
row's greedy tokens equal to PEFT generating with that adapter alone; and the same batch on the plain engine gives
the same tokens."""

from __future__ import annotations

import pytest

from swiftkit.serve.engine import lora
from swiftkit.serve.engine.engine import Engine, EngineOptions
from swiftkit.serve.engine.fast_runner import FastRunner, PagedRunner
from swiftkit.serve.engine.request import Request, SamplingParams

NEW = 12


@pytest.fixture(scope="module")
def prompts(reference) -> list[list[int]]:
    tok = reference.tokenizer
    texts = ("21 + 43 =", "the larger of 7 and 9 is", "12 + 5 =", "a b c d")
    # One long prompt: without the dense path, a first prefill of more than DECODE_ROWS tokens takes the per-adapter
    # loop, decode the gather.
    return [tok(text)["input_ids"] for text in texts] + [tok("1 2 3 4 5 6 7 8 9 10 " * 4 + "11")["input_ids"]]


def engine(toy_model, engine_kind: str = "auto", kv_cache: str = "auto") -> Engine:
    from swiftkit.loading import load_model

    model, tokenizer, _ = load_model(str(toy_model), dtype="float32", device="cpu")
    options = EngineOptions(max_num_seqs=8, max_model_len=128, engine=engine_kind, prefix_caching=True, kv_cache=kv_cache)
    return Engine(model, tokenizer, [tokenizer.eos_token_id], options, multi_adapter=True)


def generate(eng: Engine, jobs: list[tuple[list[int], str | None]]) -> list[list[int]]:
    """Greedy tokens of every (prompt, adapter) job, all in one running batch; a second copy of each job arrives
    a few steps later (a prefix-cache hit under its own adapter)."""
    outs: dict[int, list[int]] = {}
    params = SamplingParams(max_tokens=NEW, temperature=0.0, ignore_eos=True)

    def submit(i: int, ids: list[int], adapter: str | None) -> None:
        eng.submit(Request(list(ids), params, sink=lambda o, i=i: outs.setdefault(i, []).extend(o.token_ids), adapter=adapter))

    for i, (ids, adapter) in enumerate(jobs):
        submit(i, ids, adapter)
    steps = 0

    def late() -> None:
        nonlocal steps
        steps += 1
        if steps == 3:
            for i, (ids, adapter) in enumerate(jobs):
                submit(len(jobs) + i, ids, adapter)

    eng.drain(late)
    assert [outs[i] for i in range(len(jobs))] == [outs[len(jobs) + i] for i in range(len(jobs))]
    return [outs[i] for i in range(len(jobs))]


def change(eng: Engine, op: str, name: str, path=None) -> None:
    future = eng.adapter_call(op, name, None if path is None else str(path))
    eng.drain()
    future.result(timeout=0)


@pytest.mark.parametrize("kv_cache, dense", [("paged", True), ("paged", False), ("slots", True), ("slots", False)],
                         ids=["paged-dense", "paged-gather-and-loop", "slots-dense", "slots-gather-and-loop"])
def test_mixed_adapter_batches_on_the_fast_engine_equal_peft(toy_model, adapters, reference, prompts, kv_cache, dense,
                                                             monkeypatch):
    """The slot runner runs eagerly here (CPU); on CUDA the same decode is a graph replay over its static adapter ids."""
    monkeypatch.setattr(lora, "DENSE_RANKS", lora.DENSE_RANKS if dense else 0)  # LoraStack's two ways
    eng = engine(toy_model, kv_cache=kv_cache)
    assert isinstance(eng.runner, PagedRunner if kv_cache == "paged" else FastRunner)  # not the transformers forward
    want = {a: [reference(p, NEW, a) for p in prompts] for a in (None, "alpha", "beta")}
    assert len({tuple(map(tuple, v)) for v in want.values()}) == 3  # the adapters really differ

    def check(loaded: list[str | None]) -> None:
        jobs = [(p, loaded[i % len(loaded)]) for i, p in enumerate(prompts)] + [(p, None) for p in prompts]
        got = generate(eng, jobs)
        assert got == [want[a][i % len(prompts)] for i, (_, a) in enumerate(jobs)]

    check([None])  # no adapter loaded yet: a plain model
    change(eng, "load", "alpha", adapters["alpha"])
    check(["alpha", None])
    change(eng, "load", "beta", adapters["beta"])
    check(["alpha", "beta", None])
    change(eng, "unload", "alpha")
    check(["beta", None])
    change(eng, "unload", "beta")  # the last one: back to the plain base
    assert eng.runner.adapters == set()
    check([None])
    change(eng, "load", "alpha", adapters["beta"])  # a name back with other weights: no stale cached prefix
    jobs = [(p, "alpha") for p in prompts]
    assert generate(eng, jobs) == want["beta"]


def test_the_plain_engine_gives_the_same_mixed_batch(toy_model, adapters, prompts):
    results = []
    for kind in ("auto", "plain"):
        eng = engine(toy_model, kind)
        change(eng, "load", "alpha", adapters["alpha"])
        change(eng, "load", "beta", adapters["beta"])
        results.append(generate(eng, [(p, a) for p in prompts for a in (None, "alpha", "beta")]))
    assert results[0] == results[1]


@pytest.mark.real
def test_real_model_mixed_adapter_batch_equals_the_plain_engine(smollm2):
    """SmolLM2-135M with two random rank-8 LoRAs on every projection: the fast engine's stacked LoRAs (paged cache)
    give the plain engine's tokens (PEFT's mixed batch) for rows of the base and of each adapter."""
    import torch
    from peft import LoraConfig, get_peft_model

    from swiftkit.loading import load_model

    results = []
    for kind in ("auto", "plain"):
        model, tokenizer, _ = load_model(str(smollm2), dtype="float32", device="cpu")
        torch.manual_seed(5)
        cfg = LoraConfig(r=8, lora_alpha=16, init_lora_weights=False,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        peft_model = get_peft_model(model, cfg, adapter_name="a")
        peft_model.add_adapter("b", cfg)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.data.normal_(0, 0.02)
        eng = Engine(peft_model.eval(), tokenizer, [], EngineOptions(max_num_seqs=6, max_model_len=128, engine=kind),
                     multi_adapter=True)
        ids = [tokenizer(t)["input_ids"] for t in ("The capital of France is", "Water boils at", "1, 2, 3,")]
        results.append(generate(eng, [(p, a) for p in ids for a in (None, "a", "b")]))
    assert results[0] == results[1]
    assert len({tuple(r) for r in results[0]}) > 3  # the adapters change the outputs
