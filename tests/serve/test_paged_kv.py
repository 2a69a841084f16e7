"""Paged KV with automatic prefix caching (the CPU default of the fast engine) against the plain engine, fp32.

Prompts share long prefixes (a common "system prompt", and repeats of whole prompts), arrive while others run
and finish at different lengths; a pool too small for every sequence forces preemption by recompute. Tokens,
prompt logprobs, logprobs and seeded samples must equal the plain transformers engine's, and every block must
be free again at the end.
"""

from __future__ import annotations

import json

import pytest

from swiftkit.serve.engine.engine import Engine, EngineOptions
from swiftkit.serve.engine.request import Request, SamplingParams


@pytest.fixture(scope="module")
def toy(toy_model):
    from swiftkit.loading import load_model

    model, tokenizer, _ = load_model(str(toy_model), dtype="float32", device="cpu")
    rows = [json.loads(line) for line in (toy_model / "task" / "heldout.jsonl").read_text().splitlines()[:12]]
    system = tokenizer("Answer with the larger of the two numbers, and nothing else. " * 3)["input_ids"]
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": r["question"]}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"] for r in rows]
    prompts = [system + x + x[: (i * 7) % 23] for i, x in enumerate(ids)]
    return model, tokenizer, prompts + prompts[:6]  # whole prompts again: full prefix hits


def run(toy, params: list[SamplingParams], **options) -> tuple[Engine, list[Request]]:
    model, tokenizer, prompts = toy
    options = {"max_num_seqs": 5, "max_model_len": 256, "prefix_caching": True, **options}
    eng = Engine(model, tokenizer, [tokenizer.eos_token_id], EngineOptions(**options))
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
        if steps in (3, 20):
            for r in requests[-late:][:late // 2] if steps == 3 else requests[-late:][late // 2:]:
                eng.submit(r)

    eng.drain(arrive_late)
    assert all(outputs[r.request_id][-1].finished for r in requests)
    for r in requests:
        r.logprob_list = [lp for o in outputs[r.request_id] for lp in (o.logprobs or [])]
        r.prompt_lp = next((o.prompt_logprobs for o in outputs[r.request_id] if o.prompt_logprobs), None)
    return eng, requests


def greedy(n: int) -> list[SamplingParams]:
    return [SamplingParams(max_tokens=4 + (i * 13) % 50, temperature=0.0, ignore_eos=True, logprobs=2 if i % 4 == 1 else None,
                           prompt_logprobs=2 if i % 5 == 0 else None) for i in range(n)]


def test_paged_prefix_cached_greedy_equals_plain_engine(toy):
    params = greedy(len(toy[2]))
    eng, paged = run(toy, params)
    _, plain = run(toy, params, engine="plain")
    assert type(eng.runner).__name__ == "PagedRunner"
    assert [r.output_ids for r in paged] == [r.output_ids for r in plain]
    blocks = eng.runner.blocks
    assert blocks.hit_tokens > 0.3 * blocks.queried_tokens  # the shared prefixes were really reused
    for a, b in zip(paged, plain, strict=True):
        assert [x.token_id for x in a.logprob_list] == [x.token_id for x in b.logprob_list]
        for x, y in zip(a.logprob_list, b.logprob_list, strict=True):
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
            assert [t for t, _ in x.top] == [t for t, _ in y.top]
        assert (a.prompt_lp is None) == (b.prompt_lp is None)
        if a.prompt_lp:
            got = [e.logprob for e in a.prompt_lp[1:]]
            want = [e.logprob for e in b.prompt_lp[1:]]
            assert got == pytest.approx(want, abs=1e-4)
    assert blocks.num_free == blocks.num_blocks and not any(blocks.ref)  # nothing leaked


def test_a_small_pool_preempts_and_recomputes_instead_of_failing(toy):
    params = greedy(len(toy[2]))
    # 24 blocks of 16: about two of these sequences at once, so running ones are preempted when they grow
    eng, paged = run(toy, params, kv_cache_memory=24 * eng_block_bytes(toy) / 2**30)
    _, plain = run(toy, params, engine="plain")
    assert eng.runner.blocks.num_blocks == 24
    assert eng.preemptions > 0
    assert [r.output_ids for r in paged] == [r.output_ids for r in plain]
    assert [len(r.logprob_list) for r in paged] == [len(r.output_ids) if r.params.logprobs is not None else 0 for r in paged]


def eng_block_bytes(toy) -> int:
    config = toy[0].config
    return 2 * config.num_hidden_layers * config.num_key_value_heads * 16 * (config.hidden_size // config.num_attention_heads) * 4


def test_seeded_sampling_with_prefix_hits_and_n_equals_plain(toy):
    n = len(toy[2])
    # like `n` > 1: the same prompt several times with seed + i; the repeats hit the prefix cache
    params = [SamplingParams(max_tokens=20, temperature=0.9, top_p=0.9, top_k=20, seed=100 + i % 6, ignore_eos=True,
                             repetition_penalty=1.1) for i in range(n)]
    eng, paged = run(toy, params, max_num_seqs=4)
    _, plain = run(toy, params, max_num_seqs=4, engine="plain")
    assert [r.output_ids for r in paged] == [r.output_ids for r in plain]
    assert len({tuple(r.output_ids) for r in paged}) > n // 3
    assert eng.runner.blocks.hit_tokens > 0


def test_prefix_caching_off_and_slots_give_the_same_tokens(toy):
    params = greedy(len(toy[2]))
    eng, uncached = run(toy, params, prefix_caching=False)
    _, slots = run(toy, params, kv_cache="slots")
    _, cached = run(toy, params)
    assert eng.runner.blocks.hit_tokens == 0
    assert [r.output_ids for r in uncached] == [r.output_ids for r in slots] == [r.output_ids for r in cached]


def test_memory_follows_live_tokens_and_errors_say_what_fits(toy):
    from swiftkit.errors import SwiftkitError

    model, tokenizer, prompts = toy
    eng = Engine(model, tokenizer, [0], EngineOptions(max_num_seqs=32, max_model_len=4096, prefix_caching=True))
    blocks = eng.runner.blocks
    eng.submit(Request(list(prompts[0]), SamplingParams(max_tokens=1, temperature=0.0), sink=lambda o: None))
    eng.drain()  # prefilled, sampled its one token, finished: its blocks are free again, its prefix cached
    assert blocks.num_free == blocks.num_blocks and len(blocks.evictable) == len(prompts[0]) // 16
    assert blocks.high == -(-len(prompts[0]) // 16)  # only the blocks it used were ever touched
    eng.weights_changed()  # e.g. training between rollouts: cached keys are stale
    assert not blocks.evictable and not blocks.cached and blocks.num_free == blocks.num_blocks
    with pytest.raises(SwiftkitError, match="less than one sequence"):
        Engine(model, tokenizer, [0], EngineOptions(max_model_len=4096, kv_cache_memory=0.0001))


def test_requests_admitted_together_share_their_prefix(toy):
    """Like `n` choices: copies of one prompt admitted in the same step compute its blocks once."""
    model, tokenizer, prompts = toy
    prompt = prompts[3] * 2
    params = [SamplingParams(max_tokens=12, temperature=0.0 if i == 0 else 0.8, seed=7 + i, ignore_eos=True, logprobs=1)
              for i in range(4)]
    got = {}
    for engine in ("fast", "plain"):
        eng = Engine(model, tokenizer, [0], EngineOptions(max_num_seqs=4, max_model_len=256, engine=engine,
                                                          prefix_caching=True))
        reqs = [Request(list(prompt), p, sink=lambda o: None) for p in params]
        for r in reqs:
            eng.submit(r)
        eng.drain()
        got[engine] = [r.output_ids for r in reqs]
        if engine == "fast":
            blocks = eng.runner.blocks
            assert blocks.hit_tokens == 3 * ((len(prompt) - 1) // 16) * 16
            assert blocks.high <= (len(prompt) + 12) // 16 + 1 + 3 * 2  # one copy of the prompt's blocks
    assert got["fast"] == got["plain"]


def test_prompt_logprobs_from_a_position_reuse_the_cached_prefix(toy):
    """lm-eval's scoring: prompt logprobs of the last tokens only, after a shared context that the prefix
    cache holds; they equal the plain engine's full prompt logprobs there."""
    model, tokenizer, prompts = toy
    got = {}
    for engine in ("fast", "plain"):
        eng = Engine(model, tokenizer, [0], EngineOptions(max_num_seqs=4, max_model_len=256, engine=engine,
                                                          prefix_caching=True))
        outputs: dict[str, list] = {}
        reqs = [Request(list(p), SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1,
                                                prompt_logprobs_from=len(p) - 1 - i % 7),
                        sink=lambda o, outputs=outputs: outputs.setdefault(o.request_id, []).append(o)) for i, p in enumerate(prompts)]
        for r in reqs:
            eng.submit(r)
        eng.drain()
        plps = [next(o.prompt_logprobs for o in outputs[r.request_id] if o.prompt_logprobs) for r in reqs]
        got[engine] = [plp[r.params.prompt_logprobs_from:] for plp, r in zip(plps, reqs, strict=True)]
        if engine == "fast":
            assert eng.runner.blocks.hit_tokens > 0.3 * eng.runner.blocks.queried_tokens
    for fast, plain in zip(got["fast"], got["plain"], strict=True):
        assert [e.token_id for e in fast] == [e.token_id for e in plain]
        assert [e.logprob for e in fast] == pytest.approx([e.logprob for e in plain], abs=1e-4)
        assert [e.top[0][0] for e in fast] == [e.top[0][0] for e in plain]


def test_prefix_hits_do_not_count_against_the_prefill_token_budget(toy):
    """Whole prompts are admitted by the positions they compute: copies of one prompt after the first cost a
    few tokens each (its blocks are registered at admission), so a budget of 1.5 prompts admits all four."""
    model, tokenizer, prompts = toy
    prompt = prompts[3] * 2
    eng = Engine(model, tokenizer, [0], EngineOptions(max_num_seqs=4, max_model_len=256, prefix_caching=True,
                                                      max_prefill_chunk=0, max_batched_tokens=len(prompt) * 3 // 2))
    reqs = [Request(list(prompt), SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True), sink=lambda o: None)
            for _ in range(4)]
    for r in reqs:
        eng.submit(r)
    running = []
    eng.drain(lambda: running.append(len(eng.scheduler.running)))
    assert running[0] == 4  # all four joined the decode batch after the first step
    assert all(r.output_ids == reqs[0].output_ids for r in reqs)


@pytest.mark.real
def test_real_model_paged_prefix_cached_greedy_equals_plain(smollm2):
    """SmolLM2-135M in fp32: chat prompts sharing the default system prompt, late arrivals, a repeat; with and
    without prompt-lookup speculation."""
    from swiftkit.loading import load_model

    model, tokenizer, _ = load_model(str(smollm2), dtype="float32", device="cpu")
    questions = ["What is the capital of France?", "Name three primary colors.", "What is 12 times 12?",
                 "Write a haiku about the sea.", "Who wrote Hamlet?", "What is the capital of France?"]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"] for q in questions]
    params = [SamplingParams(max_tokens=10 + 4 * i, temperature=0.0, ignore_eos=True,
                             prompt_logprobs=1 if i == 2 else None) for i in range(len(prompts))]
    got = {}
    for engine, spec in (("fast", 0), ("fast", 4), ("plain", 0)):
        eng = Engine(model, tokenizer, [tokenizer.eos_token_id], EngineOptions(max_num_seqs=3, max_model_len=512,
                                                                                 engine=engine, prefix_caching=True,
                                                                                 speculative_tokens=spec))
        reqs = [Request(list(p), sp, sink=lambda o: None) for p, sp in zip(prompts, params, strict=True)]
        for r in reqs[:3]:
            eng.submit(r)
        steps = 0

        def arrive(eng=eng, reqs=reqs) -> None:
            nonlocal steps
            steps += 1
            if steps == 4:
                for r in reqs[3:]:
                    eng.submit(r)

        eng.drain(arrive)
        got[engine, spec] = [r.output_ids for r in reqs]
        if engine == "fast":
            assert eng.runner.blocks.hit_tokens >= 5 * 16  # the shared system prompt, and the repeat
    assert got["fast", 0] == got["plain", 0]
    assert got["fast", 4] == got["plain", 0]  # speculative steps (prompt lookup) keep the greedy tokens


def test_aborting_running_and_preempted_requests_frees_their_blocks(toy):
    model, tokenizer, prompts = toy
    eng = Engine(model, tokenizer, [0], EngineOptions(max_num_seqs=5, max_model_len=256, prefix_caching=True,
                                                      kv_cache_memory=24 * eng_block_bytes(toy) / 2**30))
    outputs: dict[str, list] = {}
    reqs = [Request(list(p), SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True),
                    sink=lambda o: outputs.setdefault(o.request_id, []).append(o)) for p in prompts[:6]]
    for r in reqs:
        eng.submit(r)
    aborted, aborted_waiting = [], []

    def abort_some() -> None:
        preempted = [r for r in reqs if r.preemptions and r.status.value == "waiting" and r not in aborted]
        if preempted and len(aborted) < 2:
            aborted.append(preempted[0])
            aborted_waiting.append(preempted[0])
            eng.abort(preempted[0])
        elif eng.steps == 30 and len(eng.scheduler.running) > 1:
            aborted.append(eng.scheduler.running[0])
            eng.abort(eng.scheduler.running[0])

    eng.drain(abort_some)
    assert eng.preemptions > 0 and aborted_waiting  # one was aborted while preempted (waiting, with output)
    for r in reqs:
        last = outputs[r.request_id][-1]
        assert last.finished and last.completion_tokens == len(r.output_ids)
        assert last.finish_reason == ("abort" if r in aborted else "length")
    blocks = eng.runner.blocks
    assert blocks.num_free == blocks.num_blocks and not any(blocks.ref)


def test_prompt_lookup_speculation_keeps_greedy_tokens(toy):
    """Speculative steps (n-gram drafts verified in one forward) give the non-speculative greedy tokens."""
    n = len(toy[2])
    params = [SamplingParams(max_tokens=30 + (i * 7) % 40, temperature=0.0, ignore_eos=i % 3 != 0) for i in range(n)]
    spec_eng, spec = run(toy, params, speculative_tokens=4)
    _, plain = run(toy, params)
    assert [r.output_ids for r in spec] == [r.output_ids for r in plain]
    assert spec_eng.spec_accepted > 0 and spec_eng.steps < sum(len(r.output_ids) for r in spec)
    blocks = spec_eng.runner.blocks
    assert blocks.num_free == blocks.num_blocks


def test_a_failed_step_ends_every_running_request_and_frees_the_pool(toy):
    """The engine thread survives a model failure: every running request ends with "error", the blocks go
    back and the prefix cache is dropped (its blocks may never have been written); the next request works."""
    import queue

    model, tokenizer, prompts = toy
    eng = Engine(model, tokenizer, [0], EngineOptions(max_num_seqs=4, max_model_len=256, prefix_caching=True))
    decode, calls = eng.runner.decode, []

    def failing_decode(requests):
        calls.append(len(requests))
        if len(calls) == 3:
            raise RuntimeError("injected")
        return decode(requests)

    eng.runner.decode = failing_decode
    done: queue.Queue = queue.Queue()
    eng.start()
    try:
        for p in prompts[:3]:
            eng.submit(Request(list(p), SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True),
                               sink=lambda o: o.finished and done.put(o)))
        reasons = sorted(done.get(timeout=60).finish_reason for _ in range(3))
        assert reasons == ["error"] * 3
        blocks = eng.runner.blocks
        assert blocks.num_free == blocks.num_blocks and not blocks.cached
        eng.submit(Request(list(prompts[0]), SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True),
                           sink=lambda o: o.finished and done.put(o)))
        assert done.get(timeout=60).finish_reason == "length"
    finally:
        eng.stop()


# -- chunked prefill (--max-prefill-chunk): a prompt enters over several steps, between the running rows' decodes --
def with_long_prompts(toy):
    """The toy prompts plus two of about 210 tokens; `run` submits them late, while others decode."""
    model, tokenizer, prompts = toy
    return model, tokenizer, [*prompts, prompts[0] + prompts[1], prompts[4] + prompts[2]]


def test_chunked_prefill_greedy_logprobs_and_prompt_logprobs_equal_plain(toy):
    long_toy = with_long_prompts(toy)
    params = greedy(len(long_toy[2]))
    params[-1].prompt_logprobs = 3  # a long prompt's prompt logprobs come from many chunks
    eng, chunked = run(long_toy, params, max_prefill_chunk=24)  # not a multiple of the block size
    _, plain = run(long_toy, params, engine="plain")
    assert [r.output_ids for r in chunked] == [r.output_ids for r in plain]
    blocks = eng.runner.blocks
    assert blocks.hit_tokens > 0.2 * blocks.queried_tokens
    for a, b in zip(chunked, plain, strict=True):
        for x, y in zip(a.logprob_list, b.logprob_list, strict=True):
            assert (x.token_id, [t for t, _ in x.top]) == (y.token_id, [t for t, _ in y.top])
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
        assert (a.prompt_lp is None) == (b.prompt_lp is None)
        if a.prompt_lp:
            assert len(a.prompt_lp) == len(a.prompt_ids) and a.prompt_lp[0] is None
            assert [e.token_id for e in a.prompt_lp[1:]] == a.prompt_ids[1:]
            assert [e.logprob for e in a.prompt_lp[1:]] == pytest.approx([e.logprob for e in b.prompt_lp[1:]], abs=1e-4)
            assert [[t for t, _ in e.top] for e in a.prompt_lp[1:]] == [[t for t, _ in e.top] for e in b.prompt_lp[1:]]
    assert blocks.num_free == blocks.num_blocks and not any(blocks.ref)


def test_chunked_prefill_seeded_sampling_and_preemption_equal_plain(toy):
    long_toy = with_long_prompts(toy)
    n = len(long_toy[2])
    params = [SamplingParams(max_tokens=20, temperature=0.9, top_p=0.9, seed=100 + i % 6, ignore_eos=True,
                             repetition_penalty=1.1) for i in range(n)]
    _, chunked = run(long_toy, params, max_num_seqs=4, max_prefill_chunk=16)
    _, plain = run(long_toy, params, max_num_seqs=4, engine="plain")
    assert [r.output_ids for r in chunked] == [r.output_ids for r in plain]
    small = 24 * eng_block_bytes(toy) / 2**30  # preemption while prompts are half prefilled
    eng, preempted = run(long_toy, greedy(n), kv_cache_memory=small, max_prefill_chunk=16)
    _, plain = run(long_toy, greedy(n), engine="plain")
    assert eng.preemptions > 0
    assert [r.output_ids for r in preempted] == [r.output_ids for r in plain]
    assert eng.runner.blocks.num_free == eng.runner.blocks.num_blocks


def long_prompt_engine(toy, chunk: int, blocks: int | None = None, engine: str = "fast", **params):
    """A short request decoding and a long one for the caller to submit while it does, on a paged engine."""
    model, tokenizer, prompts = toy
    memory = blocks * eng_block_bytes(toy) / 2**30 if blocks else None
    eng = Engine(model, tokenizer, [0], EngineOptions(max_num_seqs=4, max_model_len=256, prefix_caching=True, engine=engine,
                                                      max_prefill_chunk=chunk, kv_cache_memory=memory))
    outputs: dict[str, list] = {}
    sink = lambda o: outputs.setdefault(o.request_id, []).append(o)  # noqa: E731
    short = Request(list(prompts[3]), SamplingParams(max_tokens=120, temperature=0.0, ignore_eos=True), sink=sink)
    long = Request(prompts[0] + prompts[1], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, **params),
                   sink=sink)
    eng.submit(short)
    return eng, short, long, outputs


def test_running_streams_get_tokens_while_a_long_prompt_is_prefilled(toy):
    advanced = {}
    for chunk in (0, 16):
        eng, short, long, outputs = long_prompt_engine(toy, chunk)
        seen = {}

        def watch(eng=eng, short=short, long=long, seen=seen) -> None:
            if eng.steps == 3:
                eng.submit(long)
            for r in eng.scheduler.prefilling:  # prefix caching registers only the blocks already written
                assert len(r.block_hashes) * 16 <= r.kv_end < r.num_tokens
            if long.status.value != "waiting" and "admitted" not in seen:
                seen["admitted"] = len(short.output_ids) - 1  # the step that admitted it also decoded the short one
            if long.output_ids and "first" not in seen:
                seen["first"] = len(short.output_ids)

        eng.drain(watch)
        advanced[chunk] = seen["first"] - seen["admitted"]
        assert [o.finish_reason for o in outputs[long.request_id] if o.finished] == ["length"]
    assert advanced[0] == 1  # whole prompt: its prefill and the short one's decode share one step
    assert advanced[16] >= (len(long.prompt_ids) - long.kv_cached) // 16 > 1  # one decode step per chunk (after the cached prefix)


def test_aborting_a_half_prefilled_request_frees_its_blocks(toy):
    eng, short, long, outputs = long_prompt_engine(toy, 16)

    def abort_half_prefilled() -> None:
        if eng.steps == 3:
            eng.submit(long)
        if long.status.value == "running" and not long.output_ids and long.kv_end > 48:
            eng.abort(long)

    eng.drain(abort_half_prefilled)
    assert outputs[long.request_id][-1].finish_reason == "abort" and not long.output_ids
    assert outputs[short.request_id][-1].finish_reason == "length"
    blocks = eng.runner.blocks
    assert blocks.num_free == blocks.num_blocks and not any(blocks.ref)


def test_a_half_prefilled_request_is_preempted_first_and_recomputed(toy):
    """A pool that holds both prompts but not the short one's growth too: the long prompt, half prefilled, gives
    its blocks back, waits for the short one to finish, then prefills again (prompt logprobs from scratch)."""
    got = {}
    for engine in ("fast", "plain"):
        _, tokenizer, prompts = toy
        need = -(-len(prompts[3]) // 16) + -(-(len(prompts[0]) + len(prompts[1])) // 16) + 1
        eng, short, long, outputs = long_prompt_engine(toy, 4, blocks=need, engine=engine, prompt_logprobs=1)

        def arrive(eng=eng, short=short, long=long) -> None:
            if len(short.output_ids) == 2 and long.status.value == "waiting" and not long.preemptions:
                eng.submit(long)  # the short one has just started decoding

        eng.drain(arrive)
        plp = next(o.prompt_logprobs for o in outputs[long.request_id] if o.prompt_logprobs)
        got[engine] = short.output_ids, long.output_ids, [e.logprob for e in plp[1:]]
        if engine == "fast":
            blocks = eng.runner.blocks
            assert blocks.num_blocks == need and long.preemptions == eng.preemptions == 1
            assert blocks.num_free == blocks.num_blocks and not any(blocks.ref)
    assert got["fast"][:2] == got["plain"][:2]
    assert got["fast"][2] == pytest.approx(got["plain"][2], abs=1e-4)


@pytest.mark.real
def test_real_model_chunked_prefill_equals_plain(smollm2):
    """SmolLM2-135M in fp32: chat prompts decoding when a ~450-token prompt arrives; it enters in chunks of 32
    (with its prompt logprobs) while they decode. Greedy tokens and prompt logprobs equal the plain engine's."""
    from swiftkit.loading import load_model

    model, tokenizer, _ = load_model(str(smollm2), dtype="float32", device="cpu")
    questions = ["What is the capital of France?", "Name three primary colors.", "Write a haiku about the sea.",
                 "Summarise this text in one sentence:\n\n" + " ".join(["The harbour committee met on Tuesday and agreed "
                                                                       "to extend the northern pier's deadline."] * 24)]
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                             return_dict=True)["input_ids"] for q in questions]
    assert len(prompts[-1]) > 400
    params = [SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, prompt_logprobs=1 if i == 3 else None)
              for i in range(len(prompts))]
    got = {}
    for engine in ("fast", "plain"):
        eng = Engine(model, tokenizer, [tokenizer.eos_token_id], EngineOptions(
            max_num_seqs=4, max_model_len=512, engine=engine, prefix_caching=True, max_prefill_chunk=32))
        outputs: dict[str, list] = {}
        reqs = [Request(list(p), sp, sink=lambda o, outputs=outputs: outputs.setdefault(o.request_id, []).append(o))
                for p, sp in zip(prompts, params, strict=True)]
        for r in reqs[:3]:
            eng.submit(r)
        partial = []

        def arrive(eng=eng, reqs=reqs, partial=partial) -> None:
            if eng.steps == 4:
                eng.submit(reqs[3])
            partial.append(any(r is reqs[3] for r in eng.scheduler.prefilling))

        eng.drain(arrive)
        plp = next(o.prompt_logprobs for o in outputs[reqs[3].request_id] if o.prompt_logprobs)
        got[engine] = [r.output_ids for r in reqs], [e.logprob for e in plp[1:]]
        if engine == "fast":
            assert sum(partial) >= len(prompts[3]) // 32 - 1  # steps that ended with it half prefilled
    assert got["fast"][0] == got["plain"][0]
    assert got["fast"][1] == pytest.approx(got["plain"][1], abs=1e-3)
