"""Multi-LoRA routing, constrained JSON / tool calls, tool and reasoning parsing, /v1/responses."""

from __future__ import annotations

import json

import jsonschema
import pytest

from swiftkit.serve.tools import OutputParser, parse_tool_calls
from tests.serve.test_openai_api import visible_text

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 10}, "days": {"type": "integer", "maximum": 9}},
    "required": ["city", "days"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer", "maximum": 99}, "b": {"type": "integer", "maximum": 99}},
    "required": ["a", "b"], "additionalProperties": False}}}


@pytest.mark.parametrize("adapter", [None, "alpha", "beta"])
def test_each_adapter_matches_its_in_process_output(client, http, reference, adapter):
    prompt = "21 + 43 ="
    ids = http.post("/tokenize", json={"prompt": prompt}).json()["tokens"]
    r = client.completions.create(model=adapter or "toy", prompt=prompt, max_tokens=16, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].text == visible_text(reference.tokenizer, reference(ids, 16, adapter))


def test_adapters_really_differ(client):
    outs = {m: client.completions.create(model=m, prompt="21 + 43 =", max_tokens=16, temperature=0, logprobs=0,
                                         extra_body={"ignore_eos": True}).choices[0].logprobs.tokens
            for m in ("toy", "alpha", "beta")}
    assert len({tuple(v) for v in outs.values()}) == 3


def test_json_object_mode_parses(client, reference):
    # a bias toward "}" makes even an untrained model close the object soon; the grammar decides where it may
    close = reference.tokenizer.convert_tokens_to_ids("}")
    r = client.chat.completions.create(model="toy", messages=[{"role": "user", "content": "Give me JSON."}],
                                       response_format={"type": "json_object"}, max_tokens=100, temperature=0.7,
                                       seed=3, logit_bias={str(close): 5})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


@pytest.mark.parametrize("seed", [1, 2])
def test_json_schema_output_validates(client, seed):
    r = client.chat.completions.create(
        model="toy", messages=[{"role": "user", "content": "A person, as JSON."}], max_tokens=120, temperature=1.0,
        seed=seed, response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    )
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), PERSON)


def test_json_schema_streaming(client):
    stream = client.chat.completions.create(
        model="toy", messages=[{"role": "user", "content": "A person."}], max_tokens=120, stream=True, seed=4,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), PERSON)


def test_tool_choice_required_returns_valid_calls(client):
    r = client.chat.completions.create(model="toy", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                       tools=[WEATHER, ADD], tool_choice="required", max_tokens=120, seed=5,
                                       parallel_tool_calls=False)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, ADD)}
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.id
        jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


def test_named_tool_choice_streams_one_call(client):
    stream = client.chat.completions.create(
        model="toy", messages=[{"role": "user", "content": "Add 2 and 3."}], tools=[WEATHER, ADD], stream=True,
        tool_choice={"type": "function", "function": {"name": "add"}}, max_tokens=60, seed=6,
    )
    calls, finish = [], None
    for chunk in stream:
        for ch in chunk.choices:
            calls += ch.delta.tool_calls or []
            finish = ch.finish_reason or finish
    assert finish == "tool_calls" and len(calls) == 1 and calls[0].function.name == "add"
    jsonschema.validate(json.loads(calls[0].function.arguments), ADD["function"]["parameters"])


def test_tool_choice_none_and_tool_history_render(client):
    messages = [
        {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    ]
    r = client.chat.completions.create(model="toy", messages=messages, tools=[ADD], tool_choice="none", max_tokens=4)
    assert r.choices[0].finish_reason in ("stop", "length") and not r.choices[0].message.tool_calls


def test_hermes_tool_calls_parsed_from_stream_deltas():
    text = 'Let me check.<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
    parser = OutputParser("hermes")
    content = "".join(parser.feed(text[i:i + 3]).content for i in range(0, len(text), 3))
    last, calls = parser.finish()
    assert content + last.content == "Let me check."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("add", {"a": 1, "b": 2})]


def test_llama3_json_tool_calls():
    calls = parse_tool_calls('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}', "llama3_json")
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "Oslo"}
    assert parse_tool_calls("just text", "llama3_json") == []


def test_malformed_tool_call_stays_content():
    parser = OutputParser("hermes")
    first = parser.feed("<tool_call>{not json</tool_call>")
    last, calls = parser.finish()
    assert calls == [] and first.content + last.content == "<tool_call>{not json</tool_call>"


def test_think_block_becomes_reasoning_content():
    parser = OutputParser(None)
    text = "<think>2 plus 3 is 5</think>\nThe answer is 5."
    parts = [parser.feed(ch) for ch in text]
    last, _ = parser.finish()
    assert "".join(p.reasoning for p in parts) + last.reasoning == "2 plus 3 is 5"
    assert "".join(p.content for p in parts) + last.content == "The answer is 5."


def test_responses_api_text_and_stream(client):
    r = client.responses.create(model="toy", input="What is 2 + 3?", max_output_tokens=8, temperature=0)
    assert r.status == "completed" and r.output[0].type == "message"
    assert r.usage.output_tokens >= 1
    events = list(client.responses.create(model="toy", input="What is 2 + 3?", max_output_tokens=8, temperature=0,
                                          stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == r.output_text == events[-1].response.output_text


def test_responses_api_function_tool(client):
    tool = {"type": "function", "name": "add", "parameters": ADD["function"]["parameters"]}
    r = client.responses.create(model="toy", input="Add 2 and 3", tools=[tool], tool_choice="required",
                                parallel_tool_calls=False, max_output_tokens=100, temperature=0.5)
    calls = [item for item in r.output if item.type == "function_call"]
    assert calls and calls[0].name == "add"
    jsonschema.validate(json.loads(calls[0].arguments), ADD["function"]["parameters"])
