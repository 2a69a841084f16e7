"""The lm-eval model objects swiftkit scores with.

* engine (default for --model): the model is built by `swiftkit.loading.load_model` as for local,
  and lm-eval's requests run through swiftkit's continuous-batching engine (engine_lm.py).
* local: the model is built by `swiftkit.loading.load_model` (artifacts, adapter chains, merged,
  quantized) and handed to lm-eval's HFLM, which does batched loglikelihood (with its
  shared-context logits cache) and batched greedy generation with plain transformers. The
  tokenizer, and so the chat template, is the artifact's own: the one training used.
* endpoint: lm-eval's `local-completions` (echo + prompt logprobs on /v1/completions; the chat
  template is rendered locally with the model's tokenizer, exactly as the local backend does) or,
  with no local tokenizer, `local-chat-completions` (the server applies its template; generation
  tasks only).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from swiftkit.artifacts import ModelRef
from swiftkit.errors import SwiftkitError


@dataclass
class Backend:
    """An lm-eval LM plus what the report needs to say about it."""

    lm: Any
    name: str  # what was scored: artifact path or URL
    target: str  # the eval artifact's `target`
    chat_template: str | None
    info: dict[str, Any]


def has_chat_template(tokenizer) -> bool:
    return isinstance(getattr(tokenizer, "chat_template", None), str) and bool(tokenizer.chat_template)


def local_backend(model, tokenizer, target: str, batch_size: int, max_length: int | None, device: str | None) -> Backend:
    from lm_eval.models.huggingface import HFLM

    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        # generate() prefers generation_config.max_new_tokens over the max_length lm-eval passes,
        # which would silently override each task's max_gen_toks (in memory only: the artifact
        # is never modified).
        generation_config.max_new_tokens = None
    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        device=device or str(model.device),
    )
    info = {
        "backend": "local",
        "device": str(model.device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    return Backend(lm, target, target, tokenizer.chat_template if has_chat_template(tokenizer) else None, info)


def engine_backend(model, tokenizer, target: str, batch_size: int, max_length: int | None, device: str | None) -> Backend:
    from swiftkit.eval.engine_lm import EngineLM

    lm = EngineLM(model, tokenizer, batch_size, max_length, device)
    info = {
        "backend": "engine",
        "device": str(model.device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    return Backend(lm, target, target, tokenizer.chat_template if has_chat_template(tokenizer) else None, info)


def hf_backend(ref: ModelRef, batch_size: int, max_length: int | None, device: str | None, dtype: str) -> Backend:
    """lm-eval's own `hf` backend (its loading, its PEFT path): the reference for fidelity checks."""
    from lm_eval.models.huggingface import HFLM

    from swiftkit.loading import default_device, tokenizer_dir, torch_dtype

    if len(ref.adapters) > 1:
        raise SwiftkitError("--backend hf applies at most one adapter", f"{ref.path} is a chain: use --backend local or merge it")
    device = default_device(device)
    lm = HFLM(
        pretrained=str(ref.base_path),
        peft=str(ref.adapters[0]) if ref.adapters else None,
        tokenizer=str(tokenizer_dir(ref)),
        batch_size=batch_size,
        max_length=max_length,
        # The same defaults as the other backends (cuda when there is one, auto: bf16 there): hard-coded cpu/fp32
        # here ran the reference on the host of a GPU machine (a 7B bench ran out of host memory).
        device=device,
        dtype=str(torch_dtype(dtype, device)).removeprefix("torch."),
    )
    template = lm.tokenizer.chat_template if has_chat_template(lm.tokenizer) else None
    return Backend(lm, str(ref.path), str(ref.path), template, {"backend": "hf", "device": str(lm.device)})


def list_served_models(base_url: str, api_key: str | None, timeout: float = 10.0) -> list[dict[str, Any]]:
    """GET {base_url}/models; any failure is an 'unreachable endpoint' error before work starts."""
    request = urllib.request.Request(base_url.rstrip("/") + "/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        hint = "check --api-key" if exc.code in (401, 403) else "is it an OpenAI-compatible base URL ending in /v1?"
        raise SwiftkitError(f"endpoint {base_url} answered {exc.code} to GET /models", hint) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SwiftkitError(
            f"cannot reach endpoint {base_url}: {reason}",
            "start the server (e.g. swiftkit serve) or fix --url",
        ) from None
    return [m for m in payload.get("data", []) if isinstance(m, dict) and m.get("id")]


def endpoint_backend(
    base_url: str,
    api_key: str | None,
    served_model: str | None,
    tokenizer,
    tokenizer_path: str | None,
    chat: bool,
    batch_size: int,
    max_length: int | None,
    loglikelihood_tasks: list[str],
) -> Backend:
    from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

    base_url = base_url.rstrip("/")
    key = api_key or os.environ.get("OPENAI_API_KEY")
    served = list_served_models(base_url, key)
    name = served_model or (served[0]["id"] if served else None)
    if not name:
        raise SwiftkitError(f"{base_url}/models lists no model", "pass --served-model NAME")
    if key:
        os.environ["OPENAI_API_KEY"] = key  # lm-eval's API models read the key from the environment
    # lm-eval truncates prompts to max_length (2048 unless told): use the server's context
    # (vLLM and swiftkit serve list it as max_model_len), or the server refuses long prompts.
    context = next((m.get("max_model_len") for m in served if m["id"] == name), None)
    common: dict[str, Any] = {"model": name, "num_concurrent": batch_size, "max_retries": 2, "timeout": 300}
    if max_length or context:
        common["max_length"] = max_length or int(context)
    if tokenizer is None:
        if loglikelihood_tasks:
            raise SwiftkitError(
                f"{', '.join(loglikelihood_tasks)}: prompt logprobs need the model's tokenizer",
                "pass --tokenizer <model dir or artifact> (or --served-model <local dir>)",
            )
        if not chat:
            raise SwiftkitError(
                "--no-chat on an endpoint needs the model's tokenizer",
                "pass --tokenizer <model dir or artifact>",
            )
        lm = LocalChatCompletion(
            base_url=f"{base_url}/chat/completions",
            tokenizer_backend=None,
            tokenized_requests=False,
            **common,
        )
        return Backend(lm, base_url, base_url, None, {"backend": "local-chat-completions", "served_model": name})
    lm = LocalCompletionsAPI(
        base_url=f"{base_url}/completions",
        tokenizer_backend="huggingface",
        tokenizer=tokenizer_path,
        **common,
    )
    template = tokenizer.chat_template if has_chat_template(tokenizer) else None
    return Backend(
        lm,
        base_url,
        base_url,
        template,
        {"backend": "local-completions", "served_model": name, "tokenizer": tokenizer_path},
    )
