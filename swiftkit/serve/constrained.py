"""Constrained decoding: JSON mode, JSON schema and forced tool calls, via llguidance.

Why llguidance (compared on PyPI, November 2026):
- xgrammar (what vLLM uses) is fast, but its wheel pulls triton and apache-tvm-ffi (hundreds of MB)
  into a CPU environment, and its logits helper is built for GPU batches;
- outlines compiles a regex index per schema up front (seconds for rich schemas) and brings a large
  dependency tree; lm-format-enforcer is pure Python and walks the vocabulary per token (slow);
- llguidance is one 3 MB abi3 wheel with no dependencies, builds masks lazily in Rust (no per-schema
  compile step, ~tens of µs per token), supports full JSON Schema and Lark grammars, and takes a
  transformers fast tokenizer directly. Its mask comes as a byte per token, applied in the sampler.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from swiftkit.serve.errors import BadRequest

# Compact JSON: a small model left free to emit whitespace can pad until max_tokens and never close.
JSON_OPTIONS = {"whitespace_flexible": False}


class GrammarFactory:
    """Builds one llguidance matcher per request; the tokenizer wrapper is built once (~1 s).

    Compiling a large schema takes a good fraction of a second, and a request with `n` choices needs
    `n` matchers of the same grammar (each keeps its own state): the last few compiled grammars are
    kept as fresh matchers and copied (`deep_copy`, cheap) instead of compiled again.
    """

    CACHED = 4

    def __init__(self, tokenizer, vocab_size: int, eos_ids: list[int]):
        self._hf = tokenizer
        self._vocab = vocab_size
        self._eos = eos_ids
        self._tok = None
        self._lock = threading.Lock()
        self._compiled: OrderedDict[str, Any] = OrderedDict()

    def _tokenizer(self):
        with self._lock:
            if self._tok is None:
                import llguidance.hf

                self._tok = llguidance.hf.from_tokenizer(self._hf, n_vocab=self._vocab, eos_token=self._eos[0] if self._eos else None)
            return self._tok

    def matcher(self, constraint: tuple[str, Any]):
        key = json.dumps(constraint, sort_keys=True)
        with self._lock:
            fresh = self._compiled.get(key)
            if fresh is not None:
                self._compiled.move_to_end(key)
                return fresh.deep_copy()
        fresh = self._compile(constraint)
        with self._lock:
            self._compiled[key] = fresh
            while len(self._compiled) > self.CACHED:
                self._compiled.popitem(last=False)
            return fresh.deep_copy()

    def _compile(self, constraint: tuple[str, Any]):
        import llguidance

        kind, value = constraint
        if kind == "json_object":
            value = {"type": "object"}
        if kind in ("json_object", "json_schema"):
            try:
                grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(value), overrides=JSON_OPTIONS)
            except ValueError as exc:
                raise BadRequest(f"invalid JSON schema: {exc}", param="response_format") from None
        elif kind == "lark":
            grammar = llguidance.LLMatcher.grammar_from_lark(value)
        else:
            raise BadRequest(f"unknown constraint {kind!r}")
        tok = self._tokenizer()
        error = llguidance.LLMatcher.validate_grammar(grammar, tok)
        if error:
            raise BadRequest(f"cannot constrain output to this schema: {error}", param="response_format")
        matcher = llguidance.LLMatcher(tok, grammar, log_level=0)
        if matcher.is_error():
            raise BadRequest(f"cannot constrain output to this schema: {matcher.get_error()}", param="response_format")
        return matcher


# JSON Schema keywords whose value is one schema, a list of schemas, or a map of names to schemas.
_SUBSCHEMA = ("items", "additionalItems", "contains", "not", "if", "then", "else", "additionalProperties",
              "propertyNames", "unevaluatedItems", "unevaluatedProperties")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def strict_objects(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object schema that lists `properties` but
    says nothing about others (an explicit value, `true` included, is kept).

    Why: JSON Schema lets undeclared keys through by default, and pydantic-generated tool schemas
    leave the keyword out, so a small model filled calls with invented keys instead of the declared
    ones. OpenAI's strict mode requires false, and vLLM's default backend assumes it.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    for key in _SUBSCHEMA:
        if isinstance(out.get(key), dict):
            out[key] = strict_objects(out[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [strict_objects(s) for s in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: strict_objects(s) for name, s in out[key].items()}
    return out


def tool_schema(tools: list[dict], named: str | None, parallel: bool = True) -> dict:
    """The JSON a forced tool call must be: the named function's arguments, or a list of calls."""
    params = {t["function"]["name"]: strict_objects(t["function"].get("parameters") or {"type": "object"})
              for t in tools}
    if named is not None:
        return params[named]
    return {
        "type": "array", "minItems": 1, **({} if parallel else {"maxItems": 1}),
        "items": {"anyOf": [
            {"type": "object", "properties": {"name": {"const": name}, "parameters": schema},
             "required": ["name", "parameters"], "additionalProperties": False}
            for name, schema in params.items()
        ]},
    }
