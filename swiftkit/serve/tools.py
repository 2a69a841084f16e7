"""Reading structure out of generated text: `<think>` reasoning and tool calls.

`OutputParser` is fed text deltas as they are generated and says what each delta is (reasoning or
content); text that may be the start of a tool call is held back, and `finish()` returns the tool
calls found plus any remaining content. The same parser serves streaming and non-streaming
responses, so both agree exactly.

Tool-call formats:
- hermes (Qwen2.5, Hermes, most ChatML models): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
- llama3_json (Llama 3.x): the whole reply is `{"name": ..., "parameters": {...}}` (optionally after
  `<|python_tag|>`, several calls separated by `;`)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from swiftkit.serve.protocol import ToolCall, ToolCallFunction

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


@dataclass
class Parsed:
    content: str = ""
    reasoning: str = ""


@dataclass
class OutputParser:
    tools_format: str | None = None  # None: no tools in the request -> nothing is a tool call
    reasoning: bool = True
    _buf: str = ""
    _state: str = "start"  # start -> (reasoning -> after_think ->) content -> tool
    _tool_text: str = ""
    _content_all: list[str] = field(default_factory=list)

    def feed(self, text: str) -> Parsed:
        """Classify newly generated text; returns what may be sent now."""
        self._buf += text
        out = Parsed()
        while True:
            progressed = self._advance(out)
            if not progressed:
                return out

    def _advance(self, out: Parsed) -> bool:
        buf = self._buf
        if self._state == "start":
            stripped = buf.lstrip()
            if self.reasoning and THINK_OPEN.startswith(stripped) and len(stripped) < len(THINK_OPEN):
                return False  # could still become <think>
            if self.reasoning and stripped.startswith(THINK_OPEN):
                self._buf = stripped[len(THINK_OPEN):]
                self._state = "reasoning"
                return True
            self._state = "content"
            return True
        if self._state == "reasoning":
            end = buf.find(THINK_CLOSE)
            if end >= 0:
                out.reasoning += buf[:end]
                self._buf = buf[end + len(THINK_CLOSE):]
                self._state = "after_think"
                return True
            keep = _partial_suffix(buf, THINK_CLOSE)
            out.reasoning += buf[: len(buf) - keep]
            self._buf = buf[len(buf) - keep:]
            return False
        if self._state == "after_think":  # the newlines that separate thinking from the answer are neither
            self._buf = buf.lstrip("\n")
            if not self._buf:
                return False
            self._state = "content"
            return True
        if self._state == "content":
            if self.tools_format == "llama3_json" and not "".join(self._content_all).strip() and buf.lstrip()[:1] in ("{", "<"):
                self._state = "tool"  # a Llama-3 reply that starts like JSON is parsed as a whole at the end
                return True
            if self.tools_format == "hermes":
                start = buf.find(CALL_OPEN)
                if start >= 0:
                    self._emit(out, buf[:start])
                    self._buf = buf[start:]
                    self._state = "tool"
                    return True
                keep = _partial_suffix(buf, CALL_OPEN)
            else:
                keep = 0
            self._emit(out, buf[: len(buf) - keep])
            self._buf = buf[len(buf) - keep:]
            return False
        self._tool_text += buf  # state "tool": everything is held for finish()
        self._buf = ""
        return False

    def _emit(self, out: Parsed, text: str) -> None:
        out.content += text
        self._content_all.append(text)

    def finish(self) -> tuple[Parsed, list[ToolCall]]:
        """Flush held-back text; returns (last text, tool calls parsed from the held tool text)."""
        out = Parsed()
        if self._state == "reasoning":
            out.reasoning += self._buf
        elif self._state in ("start", "content", "after_think"):
            self._emit(out, self._buf)
        else:
            self._tool_text += self._buf
        self._buf = ""
        calls: list[ToolCall] = []
        if self._tool_text:
            calls = parse_tool_calls(self._tool_text, self.tools_format or "hermes")
            if not calls:  # not a well-formed call after all: it is content
                self._emit(out, self._tool_text)
        return out, calls


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def _call(obj: object) -> ToolCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return ToolCall(function=ToolCallFunction(name=obj["name"], arguments=json.dumps(args, ensure_ascii=False)))


def parse_tool_calls(text: str, fmt: str) -> list[ToolCall]:
    """Tool calls in `text` (all or nothing: one malformed call makes the whole text content)."""
    if fmt == "hermes":
        bodies = HERMES_CALL.findall(text)
    else:
        body = text.strip().removeprefix("<|python_tag|>").strip()
        bodies = [b for b in body.split(";") if b.strip()] if body else []
    calls = []
    for body in bodies:
        try:
            call = _call(json.loads(body))
        except json.JSONDecodeError:
            return []
        if call is None:
            return []
        calls.append(call)
    return calls


def calls_from_constrained(text: str, named: str | None) -> list[ToolCall]:
    """Tool calls from output constrained by `constrained.tool_schema` (always valid JSON)."""
    data = json.loads(text)
    if named is not None:
        return [ToolCall(function=ToolCallFunction(name=named, arguments=json.dumps(data, ensure_ascii=False)))]
    return [ToolCall(function=ToolCallFunction(name=c["name"], arguments=json.dumps(c["parameters"], ensure_ascii=False)))
            for c in data]
