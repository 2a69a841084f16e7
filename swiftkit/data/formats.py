"""Normalise the common dataset formats into what TRL trains on.

SFT rows become `{"messages": [...]}` (conversational); preference rows become
`{"prompt": [...], "chosen": [...], "rejected": [...]}` message lists. Accepted inputs:

- OpenAI `messages` ([{role, content}], content may be a list of text parts; assistant `tool_calls` kept)
- ShareGPT `conversations` ([{from, value}], from: system/human/user/gpt/assistant/tool/observation)
- Alpaca `instruction` (+ optional `input`, `system`) and `output`
- `prompt` / `completion` (strings or message lists)
- preferences `prompt` / `chosen` / `rejected` (strings or message lists)
- hh-rlhf transcripts: only `chosen` / `rejected`, each "\\n\\nHuman: ...\\n\\nAssistant: ..."; the prompt is
  their shared prefix.
- KTO feedback `prompt` / `completion` / `label` (desirable or not); a KTO source may also hold preference rows.
- GRPO prompts: `prompt` (text or messages) with any further columns (`answer`, `tests`, `schema`, ...)
  for the reward functions; SFT rows (messages, instruction/output), preference rows (the chosen reply)
  and GSM8K `question` / `answer` rows become a prompt plus their reference reply as `answer`.

Every problem raises a `DataError` naming the row (`Row.where`) and what is wrong.
"""

from __future__ import annotations

import re
from typing import Any

from swiftkit.data.sources import Row
from swiftkit.errors import DataError

ROLES = {"system", "user", "assistant", "tool"}
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
}
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")

Messages = list[dict[str, Any]]


def parse_column_map(pairs: list[str]) -> dict[str, str]:
    """`--columns ours=theirs` -> {theirs: ours} (a rename applied to every row before detection)."""
    mapping = {}
    for pair in pairs:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise DataError(
                f"--columns {pair!r}: expected OURS=THEIRS",
                "e.g. --columns prompt=question --columns completion=answer",
            )
        mapping[theirs.strip()] = ours.strip()
    return mapping


def apply_column_map(row: Row, mapping: dict[str, str]) -> Row:
    if not mapping:
        return row
    missing = [theirs for theirs in mapping if theirs not in row.values]
    if missing:
        raise DataError(
            f"{row.where}: column {missing[0]!r} named in --columns is missing",
            f"columns present: {', '.join(row.values)}",
        )
    return Row({mapping.get(k, k): v for k, v in row.values.items()}, row.where)


def to_conversation(row: Row) -> dict[str, Messages]:
    """An SFT row as `{"messages": [...]}` ending with an assistant turn."""
    v = row.values
    if "messages" in v:
        messages = _openai_messages(v["messages"], row, "messages")
    elif "conversations" in v:
        messages = _sharegpt_messages(v["conversations"], row)
    elif "instruction" in v and "output" in v:
        user = _text(v["instruction"], row, "instruction")
        extra = v.get("input")
        if extra not in (None, ""):
            user = f"{user}\n\n{_text(extra, row, 'input')}"
        messages = [
            {"role": "user", "content": user},
            {"role": "assistant", "content": _text(v["output"], row, "output")},
        ]
        if v.get("system"):
            messages.insert(0, {"role": "system", "content": _text(v["system"], row, "system")})
    elif "prompt" in v and "completion" in v:
        messages = _as_turns(v["prompt"], "user", row, "prompt") + _as_turns(
            v["completion"], "assistant", row, "completion"
        )
    else:
        raise DataError(
            f"{row.where}: no SFT columns found (has: {', '.join(v) or 'nothing'})",
            "expected messages, conversations, instruction/output or prompt/completion; "
            "map yours with --columns ours=theirs",
        )
    _check_conversation(messages, row)
    return {"messages": messages}


def to_preference(row: Row) -> dict[str, Messages]:
    """A preference row as prompt / chosen / rejected message lists."""
    v = row.values
    if "chosen" not in v or "rejected" not in v:
        raise DataError(
            f"{row.where}: preference data needs chosen and rejected columns "
            f"(has: {', '.join(v) or 'nothing'})",
            "expected prompt/chosen/rejected or hh-rlhf chosen/rejected transcripts; "
            "map yours with --columns ours=theirs",
        )
    if "prompt" in v:
        prompt = _as_turns(v["prompt"], "user", row, "prompt")
        chosen = _as_turns(v["chosen"], "assistant", row, "chosen")
        rejected = _as_turns(v["rejected"], "assistant", row, "rejected")
    elif isinstance(v["chosen"], str) and isinstance(v["rejected"], str):
        prompt, chosen, rejected = _split_hh(v["chosen"], v["rejected"], row)
    else:
        # Full conversations as message lists without a prompt column: the prompt is the shared prefix.
        full_c = _openai_messages(v["chosen"], row, "chosen")
        full_r = _openai_messages(v["rejected"], row, "rejected")
        cut = _shared_prefix(full_c, full_r)
        prompt, chosen, rejected = full_c[:cut], full_c[cut:], full_r[cut:]
    _check_conversation(prompt, row, "prompt", ends_with_assistant=False)
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        if not reply or any(m["role"] != "assistant" for m in reply):
            raise DataError(f"{row.where}: {name} must be assistant turn(s) after the prompt")
        _check_conversation(prompt + reply, row, name)
    if prompt[-1]["role"] == "assistant":
        raise DataError(f"{row.where}: the prompt must end with a user (or tool) turn, not an assistant turn")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def to_feedback(row: Row) -> dict[str, Any]:
    """A KTO row: unpaired `prompt` / `completion` / `label` (bool), or a preference row kept as a pair
    (kto.py splits pairs into a desirable and an undesirable row after the held-out split)."""
    v = row.values
    if "label" not in v:
        if "chosen" in v and "rejected" in v:
            return to_preference(row)
        raise DataError(
            f"{row.where}: KTO data needs prompt/completion/label or prompt/chosen/rejected columns "
            f"(has: {', '.join(v) or 'nothing'})",
            "map yours with --columns ours=theirs",
        )
    if "prompt" not in v or "completion" not in v:
        raise DataError(f"{row.where}: a labelled row needs prompt and completion columns (has: {', '.join(v)})")
    prompt = _as_turns(v["prompt"], "user", row, "prompt")
    completion = _as_turns(v["completion"], "assistant", row, "completion")
    _check_conversation(prompt, row, "prompt", ends_with_assistant=False)
    if any(m["role"] != "assistant" for m in completion):
        raise DataError(f"{row.where}: completion must be assistant turn(s) after the prompt")
    _check_conversation(prompt + completion, row, "completion")
    return {"prompt": prompt, "completion": completion, "label": _label(v["label"], row)}


# Columns a prompt row's format consumes; every other column goes on to the reward functions.
_PROMPT_FORMAT_COLUMNS = {"prompt", "messages", "conversations", "instruction", "input", "output", "system", "question"}


def to_prompt(row: Row) -> dict[str, Any]:
    """A GRPO row: `prompt` messages ending with a user turn, plus the row's other columns (the rewards'
    inputs). Rows without a `prompt` column are read as a question and its reference answer."""
    v = row.values
    extra = {k: val for k, val in v.items() if k not in _PROMPT_FORMAT_COLUMNS}
    if "prompt" in v:
        prompt = _as_turns(v["prompt"], "user", row, "prompt")
        # A preference row's chosen reply (or an SFT-style completion) is the reference answer.
        for reference in ("completion", "chosen"):
            if reference in v and "answer" not in v:
                extra["answer"] = "".join(m["content"] for m in _as_turns(v[reference], "assistant", row, reference))
        for consumed in ("completion", "chosen", "rejected"):
            extra.pop(consumed, None)
    elif "question" in v:
        prompt = [{"role": "user", "content": _text(v["question"], row, "question")}]
    else:
        try:
            messages = to_conversation(row)["messages"]
        except DataError:
            raise DataError(
                f"{row.where}: no prompt columns found (has: {', '.join(v) or 'nothing'})",
                "expected prompt (+ answer, tests, schema ...), question/answer, or SFT rows; map yours with --columns ours=theirs",
            ) from None
        prompt = messages[:-1]
        extra.setdefault("answer", messages[-1]["content"])
    _check_conversation(prompt, row, "prompt", ends_with_assistant=False)
    if prompt[-1]["role"] == "assistant":
        raise DataError(f"{row.where}: the prompt must end with a user (or tool) turn, not an assistant turn")
    return {"prompt": prompt, **extra}


def _label(value: Any, row: Row) -> bool:
    # CSV readers give "true"/"1" strings, parquet and JSON give booleans or 0/1.
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise DataError(f"{row.where}: label must be true or false (desirable or not), got {value!r}")


def _text(value: Any, row: Row, column: str) -> str:
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        # OpenAI content parts: only text parts can be trained on here.
        if any(p.get("type", "text") != "text" for p in value):
            raise DataError(f"{row.where}: {column} has non-text content parts", "only text is supported")
        value = "".join(str(p.get("text", "")) for p in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # CSV/parquet readers type numeric answers ("42") as numbers
    if not isinstance(value, str):
        raise DataError(f"{row.where}: {column} must be text, got {type(value).__name__}")
    return value


def _as_turns(value: Any, role: str, row: Row, column: str) -> Messages:
    """A column that is either plain text (one `role` turn) or a list of messages."""
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return _openai_messages(value, row, column)
    return [{"role": role, "content": _text(value, row, column)}]


def _openai_messages(value: Any, row: Row, column: str) -> Messages:
    if not isinstance(value, list) or not value:
        raise DataError(f"{row.where}: {column} must be a non-empty list of messages")
    messages = []
    for i, message in enumerate(value, start=1):
        if not isinstance(message, dict) or "role" not in message:
            raise DataError(
                f"{row.where}: {column} turn {i} has no role", "each message needs role and content"
            )
        clean: dict[str, Any] = {
            "role": message["role"],
            "content": _text(message.get("content") or "", row, f"{column} turn {i}"),
        }
        if message.get("tool_calls"):
            clean["tool_calls"] = message["tool_calls"]
        messages.append(clean)
    return messages


def _sharegpt_messages(value: Any, row: Row) -> Messages:
    if not isinstance(value, list) or not value:
        raise DataError(f"{row.where}: conversations must be a non-empty list of {{from, value}} turns")
    messages = []
    for i, turn in enumerate(value, start=1):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DataError(f"{row.where}: conversations turn {i} needs 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise DataError(
                f"{row.where}: conversations turn {i} has unknown speaker {turn['from']!r}",
                f"known: {', '.join(SHAREGPT_ROLES)}",
            )
        messages.append({"role": role, "content": _text(turn["value"], row, f"conversations turn {i}")})
    return messages


def _check_conversation(
    messages: Messages, row: Row, what: str = "conversation", ends_with_assistant: bool = True
) -> None:
    if not messages:
        raise DataError(f"{row.where}: {what} is empty")
    for i, message in enumerate(messages, start=1):
        role = message["role"]
        if role not in ROLES:
            raise DataError(
                f"{row.where}: {what} turn {i} has unknown role {role!r}",
                "roles: system, user, assistant, tool",
            )
        if role == "system" and i != 1:
            raise DataError(f"{row.where}: {what} turn {i}: a system message may only come first")
        if not message["content"].strip() and not message.get("tool_calls"):
            raise DataError(f"{row.where}: {what} turn {i} ({role}) is empty")
    if ends_with_assistant:
        if messages[-1]["role"] != "assistant":
            raise DataError(
                f"{row.where}: {what} must end with an assistant turn (last is {messages[-1]['role']})"
            )
        if not any(m["role"] == "user" for m in messages):
            raise DataError(f"{row.where}: {what} has no user turn")


def _split_hh(chosen: str, rejected: str, row: Row) -> tuple[Messages, Messages, Messages]:
    full_c, full_r = _hh_turns(chosen, row, "chosen"), _hh_turns(rejected, row, "rejected")
    cut = _shared_prefix(full_c, full_r)
    if cut == len(full_c) or cut == len(full_r):
        raise DataError(
            f"{row.where}: chosen and rejected transcripts do not differ after their shared prompt"
        )
    # The last differing turns are the replies; anything shared stays in the prompt.
    return full_c[:cut], full_c[cut:], full_r[cut:]


def _hh_turns(text: str, row: Row, column: str) -> Messages:
    parts = HH_TURN.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    if len(parts) < 3 or parts[0].strip():
        raise DataError(
            f"{row.where}: {column} is not an hh-rlhf transcript",
            'expected "\\n\\nHuman: ...\\n\\nAssistant: ..."',
        )
    roles = {"Human": "user", "Assistant": "assistant"}
    return [
        {"role": roles[speaker], "content": content.strip()}
        for speaker, content in zip(parts[1::2], parts[2::2], strict=False)
    ]


def _shared_prefix(a: Messages, b: Messages) -> int:
    cut = 0
    while cut < min(len(a), len(b)) and a[cut] == b[cut]:
        cut += 1
    # The shared prefix is the prompt: if the replies diverge mid-way, back up to the last user turn.
    while cut > 0 and a[cut - 1]["role"] == "assistant":
        cut -= 1
    return cut
