"""What every route handler of one server shares: the served model, the engine, limits, metrics."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from swiftkit.serve.constrained import GrammarFactory
from swiftkit.serve.engine.detokenizer import hidden_token_ids
from swiftkit.serve.errors import ModelNotFound
from swiftkit.serve.metrics import Metrics
from swiftkit.serve.model import ServedModel


@dataclass
class ServerState:
    served: ServedModel
    engine: Any
    metrics: Metrics
    grammar: GrammarFactory
    tool_format: str
    limits: Any  # the ServeConfig: its size limits (generation.check_limits)
    api_key: str | None = None
    admin_key: str | None = None
    tenancy: Any = None  # serve.tenancy.Tenancy with --database: tenant keys, limits, usage log
    guards: Any = None  # serve.guards.Guards with --guard / --blocklist
    allowed_networks: list = field(default_factory=list)  # --allow-ip, as ipaddress networks
    embedder: Any = None  # callable(list[list[int]]) -> list[list[float]], run on the engine thread
    deployment: Any = None  # serve.deployment.Deployment when this model is one of several behind one endpoint
    adapters: Any = None  # serve.adapters.RuntimeAdapters with --adapter-dir: adapters loaded at run time
    draining: bool = False
    inflight: int = 0
    # Tokenizing, chat templates and grammar compilation take seconds on big inputs: they run here,
    # off the event loop (the tokenizers release the GIL), and the pool's size bounds how many at once.
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="swiftkit-prep"))
    _token_text: dict[int, str] = field(default_factory=dict)
    _hidden: frozenset[int] | None = None

    @property
    def vocab_size(self) -> int:
        return self.served.vocab_size

    async def offload(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args))

    def adapter_for(self, model: str) -> str | None:
        """The adapter a request's `model` selects (None: the base); 404 for names not served."""
        if model in (self.served.name, self.served.ref.ref):
            return None
        if model in self.served.adapters:
            return model
        served = self.deployment.model_names() if self.deployment is not None else self.model_names()
        raise ModelNotFound(f"the model `{model}` does not exist; served: {', '.join(served)}",
                            param="model", code="model_not_found")

    def model_names(self) -> list[str]:
        return [self.served.name, *self.served.adapters]

    def token_text(self, token_id: int, skip_special: bool = False) -> str:
        """A token's text in logprobs; with `skip_special`, hidden special tokens (eos) are "" as in the
        generated text, so the tokens of a choice concatenate to its text."""
        if self._hidden is None:
            self._hidden = hidden_token_ids(self.served.tokenizer)
        if skip_special and token_id in self._hidden:
            return ""
        text = self._token_text.get(token_id)
        if text is None:
            text = self._token_text[token_id] = self.served.tokenizer.decode([token_id])
        return text
