"""The model a server, `infer` or `chat` generates with: weights, adapters, tokenizer and serving info.

Chat template, eos ids and stop strings come from the artifact's manifest `serving` field (exactly
what training used), falling back to the tokenizer and generation config for plain HF directories.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swiftkit.artifacts import ModelRef, read_manifest
from swiftkit.console import console
from swiftkit.errors import ArtifactError, SwiftkitError
from swiftkit.resolve import resolve_model_ref
from swiftkit.serve.config import EngineConfig

DEFAULT_MAX_LEN = 4096


@dataclass
class ServedModel:
    name: str
    ref: ModelRef
    model: Any
    tokenizer: Any
    chat_template: str | None
    eos_ids: list[int]
    stop: list[str]
    max_model_len: int
    vocab_size: int
    adapters: dict[str, Path] = field(default_factory=dict)

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None,
                    add_generation_prompt: bool = True, extra: dict | None = None) -> str:
        if not self.chat_template:
            raise SwiftkitError("this model has no chat template", "use /v1/completions, or serve an artifact that carries one")
        try:
            return self.tokenizer.apply_chat_template(
                messages, tools=tools or None, add_generation_prompt=add_generation_prompt, tokenize=False,
                chat_template=self.chat_template, **(extra or {}),
            )
        except Exception as exc:  # template errors are caused by the request's messages
            raise SwiftkitError(f"the chat template rejected these messages: {exc}") from None

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    @functools.cached_property
    def max_prompt_chars(self) -> int:
        """More characters than this cannot fit the context, so a prompt is refused before it is tokenized
        (a 7 MB prompt took 12 s of CPU and 1.4 GB to find out). No token covers more characters than the
        longest vocabulary entry; x4 for normalizers that compose characters (NFC)."""
        longest = max(map(len, self.tokenizer.get_vocab()), default=1)
        return self.max_model_len * longest * 4

    def build_engine(self, cfg: EngineConfig, engine_cls=None, on_step=None):
        """The engine over these weights; with --adapter-dir (adapters may be loaded later) it runs PEFT's
        mixed-adapter forward from the start, as with --adapter."""
        from swiftkit.serve.engine.engine import AsyncEngine, EngineOptions

        options = EngineOptions(max_num_seqs=cfg.max_num_seqs, max_model_len=self.max_model_len,
                                max_queue=cfg.max_queue, max_batched_tokens=cfg.max_batched_tokens, seed=cfg.seed,
                                engine=cfg.engine, enforce_eager=cfg.enforce_eager, kv_cache=cfg.kv_cache,
                                kv_cache_memory=cfg.kv_cache_memory, prefix_caching=cfg.enable_prefix_caching,
                                speculative_tokens=cfg.speculative_ngram, max_prefill_chunk=cfg.max_prefill_chunk)
        return (engine_cls or AsyncEngine)(self.model, self.tokenizer, self.eos_ids, options,
                                           multi_adapter=bool(self.adapters or getattr(cfg, "adapter_dir", None)),
                                           on_step=on_step)


def parse_adapters(specs: list[str]) -> dict[str, str]:
    adapters: dict[str, str] = {}
    for spec in specs:
        name, sep, ref = spec.partition("=")
        if not sep or not name or not ref:
            raise SwiftkitError(f"--adapter {spec!r} is not NAME=REF", "e.g. --adapter math=runs/sft-math")
        if name in adapters:
            raise SwiftkitError(f"--adapter name {name!r} given twice")
        adapters[name] = ref
    return adapters


def adapter_path(name: str, ref: str, base: ModelRef, label: str | None = None) -> Path:
    """An adapter served beside the base must apply directly to it (no chain of its own). `label`: how
    errors name it (default `--adapter NAME=REF`)."""
    label = label or f"--adapter {name}={ref}"
    path = Path(ref).expanduser()
    if path.is_dir() and read_manifest(path) is None and (path / "adapter_config.json").is_file():
        return path.resolve()  # a plain PEFT directory: trusted to match the base
    aref = resolve_model_ref(ref)
    if aref.kind != "adapter":
        raise ArtifactError(f"{label} is not an adapter", "give a LoRA adapter artifact or PEFT directory")
    if aref.adapters != [aref.path] or aref.base_path != base.path or base.adapters:
        raise ArtifactError(
            f"{label} does not apply directly to the served model {base.path}",
            "serve its own base with --model, or `swiftkit merge` its adapter chain first",
        )
    return aref.path


def load_served_model(cfg: EngineConfig, name: str | None = None, weights: bool = True) -> ServedModel:
    """Load --model (merging any adapter chain) and every --adapter as a named PEFT adapter.

    `weights=False` gives the HTTP front end of a server whose engine runs in another process: the
    tokenizer, template, eos ids and context, but no model (`model` is None).
    """
    from swiftkit.loading import default_device, load_model, load_tokenizer, serving_info

    adapters = parse_adapters(cfg.adapter)
    if weights:
        # load_model leaves the weights where they load (CPU) without a device; --device documents cuda first
        model, tokenizer, mref = load_model(cfg.model, dtype=cfg.dtype, device=default_device(cfg.device),
                                            trust_remote_code=cfg.trust_remote_code)
        config, vocab = model.config, int(model.get_output_embeddings().weight.shape[0])
    else:
        from transformers import AutoConfig, GenerationConfig

        mref = resolve_model_ref(cfg.model)
        tokenizer = load_tokenizer(mref, cfg.trust_remote_code)
        config = AutoConfig.from_pretrained(mref.base_path, trust_remote_code=cfg.trust_remote_code)
        vocab = int(getattr(config, "vocab_size", None) or len(tokenizer))
        try:
            generation = GenerationConfig.from_pretrained(mref.base_path)
        except OSError:
            generation = None
        model = None
    adapter_dirs = {n: adapter_path(n, r, mref) for n, r in adapters.items()}
    if adapter_dirs and weights:
        from peft import PeftModel

        first, *rest = adapter_dirs.items()
        model = PeftModel.from_pretrained(model, first[1], adapter_name=first[0])
        for adapter_name, path in rest:
            model.load_adapter(path, adapter_name=adapter_name)
        model.eval()
    manifest_serving = mref.manifest.serving if mref.manifest and mref.manifest.serving else None
    fallback = serving_info(tokenizer, model if weights else _WithGeneration(generation))
    template = (manifest_serving.chat_template if manifest_serving else None) or fallback.chat_template
    eos_ids = (manifest_serving.eos_token_ids if manifest_serving else None) or fallback.eos_token_ids
    stop = list(manifest_serving.stop) if manifest_serving else []
    max_len = cfg.max_model_len or min(_model_context(config), DEFAULT_MAX_LEN)
    if weights:
        console.print(f"[bold]model[/] {mref.path}  adapters: {', '.join(adapter_dirs) or 'none'}  "
                      f"context {max_len}  eos {eos_ids}")
    return ServedModel(name or cfg.model, mref, model, tokenizer, template, list(eos_ids), stop, max_len,
                       vocab, adapter_dirs)


@dataclass
class _WithGeneration:
    generation_config: Any


def _model_context(config) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_LEN


def tool_parser_for(template: str | None, choice: str) -> str:
    """The tool-call format to parse: explicit, or guessed from the chat template."""
    if choice != "auto":
        return choice
    text = template or ""
    if "<tool_call>" in text:
        return "hermes"
    if "<|python_tag|>" in text or "ipython" in text:
        return "llama3_json"
    return "hermes"


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SwiftkitError(f"{path}:{i}: invalid JSON: {exc.msg}") from None
    return rows
