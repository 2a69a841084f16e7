"""`--backend engine`: lm-eval's requests through swiftkit's continuous-batching engine.

The LM is lm-eval's HFLM over the swiftkit-loaded model, so tokenization, truncation, chat-template
rendering and rolling windows are exactly HFLM's (the `local`/`hf` references); only the two places
where HFLM runs the model are replaced:

* `_loglikelihood_tokens` (loglikelihood and loglikelihood_rolling windows): every distinct token
  sequence is one engine request with `prompt_logprobs=1` from the continuation's first token on and
  `max_tokens=1`, so the engine runs a batched prefill and nothing else, and the context before the
  continuation may come from the prefix cache. Requests that share their input and score one token (the
  choices of a multiple-choice question) are one request whose first-token `logprobs` cover the
  whole vocabulary: the same one-forward-per-question sharing HFLM's logits cache does.
* `generate_until`: every request is submitted at once (longest first) and the engine's scheduler
  keeps its batch full: lm-eval's stop sequences are the engine's stop strings, `max_gen_toks` its
  `max_tokens`, and the text is decoded and cut exactly as HFLM does.

The engine steps on the calling thread (`Engine.drain`), sized to the longest request of the call. Scoring
runs on the paged KV cache on every device, so a subject's shared few-shot prefix is prefilled once (prefix
caching); generation keeps the device's default cache (on CUDA the slot cache, whose decode runs in CUDA graphs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

from swiftkit.errors import SwiftkitError

LOGITS_BUDGET = 2 * 2**30  # bytes of fp32 prompt logits one prefill may hold (all positions × vocabulary)
SAMPLING_KEYS = {"do_sample", "temperature", "top_p", "top_k", "seed"}


class EngineLM(HFLM):
    def __init__(self, model, tokenizer, batch_size: int, max_length: int | None, device: str | None):
        super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
                         device=device or str(model.device))
        self._engine = None
        self._engine_key = (0, "")  # (context it holds, KV cache kind)
        # What HF's generate() stops at (the references' behaviour), not the serving manifest's eos.
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = eos if eos is not None else tokenizer.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])

    # -- the engine ------------------------------------------------------------------------------
    def engine(self, longest: int, kv_cache: str):
        """An engine whose context holds `longest` tokens on a `kv_cache` (auto|paged) KV cache (rebuilt only when
        a call needs more context or the other cache)."""
        from swiftkit.serve.engine.engine import Engine, EngineOptions
        from swiftkit.serve.engine.runner import resolve_kv_cache

        need = min(-(-(longest + 2) // 256) * 256, self.max_length + 2)
        kv_cache = resolve_kv_cache(kv_cache, self._model.device)  # off CUDA both are paged: one engine serves both
        if self._engine is None or need > self._engine_key[0] or kv_cache != self._engine_key[1]:
            self._engine = None  # free the old cache before the new one is allocated
            vocab = int(self._model.get_output_embeddings().weight.shape[0])
            options = EngineOptions(
                max_num_seqs=int(self.batch_size), max_model_len=need, max_queue=2**31 - 1,
                max_batched_tokens=max(need, min(8192, LOGITS_BUDGET // (4 * vocab))),
                prefix_caching=True,  # the weights never change during an eval: shared few-shot prefixes are reused
                kv_cache=kv_cache,
            )
            self._engine = Engine(self._model, self.tokenizer, self.eos_ids, options)
            self._engine_key = (need, kv_cache)
        return self._engine

    def _run(self, jobs: list[tuple[list[int], Any]], on_done: Callable[[int, Any], None], kv_cache: str) -> None:
        """Submit (prompt ids, params) jobs longest first, step the engine until all finish."""
        from swiftkit.serve.engine.request import Request

        engine = self.engine(max(len(ids) + params.max_tokens for ids, params in jobs), kv_cache)
        outputs: dict[int, list] = {i: [] for i in range(len(jobs))}

        def sink(index: int, out) -> None:
            outputs[index].append(out)
            if out.finished:
                if out.finish_reason == "error":
                    raise SwiftkitError(f"the engine failed on an eval request ({len(jobs[index][0])} prompt tokens)",
                                        "re-run with --backend local to compare")
                on_done(index, outputs.pop(index))

        for index in sorted(range(len(jobs)), key=lambda i: -len(jobs[i][0])):
            ids, params = jobs[index]
            engine.submit(Request(list(ids), params, sink=lambda out, index=index: sink(index, out)))
        try:
            engine.drain()
        except SwiftkitError:
            raise
        except Exception as exc:  # a model the engine's forward cannot run (custom code, an odd cache)
            raise SwiftkitError(f"the engine cannot run this model: {type(exc).__name__}: {exc}".splitlines()[0],
                                "use --backend local (lm-eval's HFLM on the same weights)") from None

    # -- lm-eval's model calls -------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        from swiftkit.serve.engine.request import SamplingParams

        vocab = int(self._model.get_output_embeddings().weight.shape[0])
        wholes = [tuple((ctx + cont)[-(self.max_length + 1):]) for _, ctx, cont in requests]
        conts = [list(cont) for _, _, cont in requests]
        # One request per distinct input: one-token continuations after the same input share it.
        keys = [(w[:-1], "next") if len(c) == 1 else (w, "prompt") for w, c in zip(wholes, conts, strict=True)]
        distinct = list(dict.fromkeys(keys))
        members: dict[tuple, list[int]] = {k: [] for k in distinct}
        for i, key in enumerate(keys):
            members[key].append(i)
        # A longer continuation scores its tokens from the prompt: only those positions need logits, so the
        # context before them (a shared few-shot prefix) can come from the prefix cache.
        jobs = [
            (list(ids), SamplingParams(max_tokens=1, temperature=0.0, logprobs=vocab))
            if kind == "next"
            else (list(ids), SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1,
                                            prompt_logprobs_from=len(ids) - max(len(conts[i]) for i in members[(ids, kind)])))
            for ids, kind in distinct
        ]
        results: list[tuple[float, bool] | None] = [None] * len(requests)

        def done(index: int, outs: list) -> None:
            key = distinct[index]
            out = outs[0]
            if key[1] == "next":
                top = out.logprobs[0].top  # every token's logprob, best first
                table = dict(top)
                for i in members[key]:
                    answer = (table[conts[i][0]], top[0][0] == conts[i][0])
                    self._record(requests[i], answer, results, i)
                return
            for i in members[key]:
                scored = out.prompt_logprobs[-len(conts[i]):]
                answer = (sum(e.logprob for e in scored), all(e.top[0][0] == e.token_id for e in scored))
                self._record(requests[i], answer, results, i)

        self._run(jobs, done, kv_cache="paged")
        return results

    def _record(self, request, answer: tuple[float, bool], results: list, index: int) -> None:
        results[index] = answer
        if request[0] is not None:  # rolling windows are cached per document by loglikelihood_rolling
            self.cache_hook.add_partial("loglikelihood", request[0], answer)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        eos = self.tok_decode(self.eot_token_id, skip_special_tokens=False)
        jobs, stops = [], []
        for request in requests:
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen_toks = kwargs.pop("max_gen_toks")
            if self.max_length - max_gen_toks <= 0:
                raise SwiftkitError(f"max_gen_toks {max_gen_toks} leaves no room for a prompt in {self.max_length} tokens",
                                    "lower --max-gen-toks or raise --max-length")
            ids, _ = self.tok_batch_encode([context], left_truncate_len=self.max_length - max_gen_toks, truncation=self.truncation)
            jobs.append((ids[0].tolist(), self._sampling(kwargs, max_gen_toks, until)))
            stops.append(until)
        texts: list[str | None] = [None] * len(requests)

        def done(index: int, outs: list) -> None:
            tokens = [t for out in outs for t in out.token_ids]
            texts[index] = self._text(tokens, stops[index])
            self.cache_hook.add_partial("generate_until", requests[index].args, texts[index])

        if jobs:
            self._run(jobs, done, kv_cache="auto")
        return texts

    def _sampling(self, kwargs: dict, max_gen_toks: int, until: Sequence[str]):
        from swiftkit.serve.engine.request import SamplingParams

        unknown = set(kwargs) - SAMPLING_KEYS
        if unknown:
            raise SwiftkitError(f"--backend engine does not support generation kwargs {', '.join(sorted(unknown))}",
                                "use --backend local (transformers generate) for this task")
        greedy = not kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) == 0.0
        # HF generate() applies these from the model's generation_config, so the engine must too.
        config = getattr(self._model, "generation_config", None)
        repetition = float(getattr(config, "repetition_penalty", None) or 1.0)
        return SamplingParams(
            max_tokens=max_gen_toks, temperature=0.0 if greedy else float(kwargs.get("temperature", 1.0)),
            top_p=float(kwargs.get("top_p") or 1.0), top_k=int(kwargs.get("top_k") or 0), seed=kwargs.get("seed"),
            repetition_penalty=repetition, min_tokens=int(getattr(config, "min_new_tokens", None) or 0),
            # stop strings are matched on text with special tokens kept, as lm-eval's stopping criteria do
            stop=list(until), skip_special_tokens=False,
        )

    def _text(self, tokens: list[int], until: list[str]) -> str:
        """HFLM's decoding of a continuation: thinking cut, special tokens dropped, cut at the first stop."""
        if isinstance(self.think_end_token, int) and self.think_end_token in tokens:
            tokens = tokens[len(tokens) - tokens[::-1].index(self.think_end_token):]
        text = self.tok_decode(tokens)
        if isinstance(self.think_end_token, int):
            text = text.lstrip()
        think = self.think_end_token if isinstance(self.think_end_token, str) else None
        return postprocess_generated_text(generation=text, stop=until, think_end_token=think)
