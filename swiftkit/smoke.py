"""`swiftkit smoke`: start `swiftkit serve` on a model, ask it one question through the official
`openai` SDK, print the answer and the streaming speed, stop the server.

It is the last stage of the quickstart recipe: proof that the artifact the chain produced is
servable exactly the way users will call it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import Field

from swiftkit.config import CommandConfig
from swiftkit.console import summary
from swiftkit.errors import SwiftkitError
from swiftkit.resolve import resolve_model_ref


class SmokeConfig(CommandConfig):
    model: str = Field(..., description="Model reference to serve.")
    question: str = Field("What is the larger of 37 and 45?", description="The user message to send.")
    max_tokens: int = Field(32, description="Max tokens of the answer.")
    concurrency: int = Field(16, description="Then this many concurrent streams of --burst-tokens each, for throughput (0: skip).")
    burst_tokens: int = Field(64, description="Tokens per burst request (eos ignored so every request decodes this many).")
    startup_timeout: float = Field(180.0, description="Seconds to wait for the server to become healthy.")
    check: str | None = Field(
        None, description="jsonl of {question, answer}: served greedy answers must equal in-process greedy ones; counts correct."
    )
    check_rows: int = Field(16, description="Rows of --check to ask.")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cfg: SmokeConfig) -> dict:
    from openai import OpenAI

    path = resolve_model_ref(cfg.model).path
    port = _free_port()
    log = Path(path.parent) / f".smoke-{path.name}.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "swiftkit", "serve", "--model", str(path), "--port", str(port), "--served-model-name", "smoke"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ},
            start_new_session=True,
        )
        try:
            _wait_healthy(server, port, cfg.startup_timeout, log)
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
            started = time.perf_counter()
            first = None
            pieces: list[str] = []
            usage = None
            stream = client.chat.completions.create(
                model="smoke",
                messages=[{"role": "user", "content": cfg.question}],
                max_tokens=cfg.max_tokens,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    first = first or time.perf_counter()
                    pieces.append(chunk.choices[0].delta.content)
                if chunk.usage:
                    usage = chunk.usage
            burst = _burst(port, cfg) if cfg.concurrency > 0 else None
            served = _served_answers(client, cfg) if cfg.check else None
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    answer = "".join(pieces)
    tokens = usage.completion_tokens if usage else len(pieces)
    result = {
        "model": str(path),
        "question": cfg.question,
        "answer": answer,
        "completion_tokens": tokens,
        "ttft_s": round((first or time.perf_counter()) - started, 4),
        # Aggregate decode throughput of the concurrent burst (one short answer says little about speed).
        "tokens_per_second": burst,
    }
    rows = [
        ("question", cfg.question),
        ("answer", answer),
        ("tokens", tokens),
        ("time to first token", f"{result['ttft_s'] * 1000:.0f} ms"),
    ]
    if burst is not None:
        rows.append((f"throughput, {cfg.concurrency} streams x {cfg.burst_tokens} tokens", f"{burst:.0f} tok/s"))
    if served is not None:
        result.update(_compare_in_process(path, served, cfg.max_tokens))
        rows.append(("served == in-process greedy", f"{result['served_equal']}/{len(served)}"))
        rows.append(("served answers correct", f"{result['served_correct']}/{len(served)}"))
    summary("serve smoke test (openai SDK, streaming)", rows, artifact=str(path))
    return result


def _burst(port: int, cfg: SmokeConfig) -> float:
    """`concurrency` simultaneous streams through the async SDK; returns completion tokens per second."""
    import asyncio

    from openai import AsyncOpenAI

    async def one(client: AsyncOpenAI, i: int) -> int:
        reply = await client.chat.completions.create(
            model="smoke",
            messages=[{"role": "user", "content": f"What is the larger of {10 + i} and {99 - i}?"}],
            max_tokens=cfg.burst_tokens,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        return reply.usage.completion_tokens

    async def burst() -> float:
        async with AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0) as client:
            started = time.perf_counter()
            counts = await asyncio.gather(*(one(client, i) for i in range(cfg.concurrency)))
            return sum(counts) / (time.perf_counter() - started)

    return round(asyncio.run(burst()), 1)


def _served_answers(client, cfg: SmokeConfig) -> list[tuple[dict, str]]:
    rows = [json.loads(line) for line in Path(cfg.check).read_text().splitlines() if line.strip()][: cfg.check_rows]
    answers = []
    for row in rows:
        reply = client.chat.completions.create(
            model="smoke", messages=[{"role": "user", "content": row["question"]}], max_tokens=cfg.max_tokens, temperature=0
        )
        answers.append((row, reply.choices[0].message.content or ""))
    return answers


def _compare_in_process(path: Path, served: list[tuple[dict, str]], max_tokens: int) -> dict:
    """Greedy answers of the same checkpoint loaded in this process, the way users load it."""
    import torch

    from swiftkit.loading import load_model

    model, tokenizer, _ = load_model(path)
    equal = correct = 0
    for row, answer in served:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["question"]}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        local = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        equal += local.strip() == answer.strip()
        correct += answer.strip() == str(row["answer"]).strip()
    return {"served_equal": equal, "served_correct": correct, "checked": len(served)}


def _wait_healthy(server: subprocess.Popen, port: int, timeout: float, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise SwiftkitError(f"swiftkit serve exited with {server.returncode}: {' | '.join(tail)}", f"full log: {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SwiftkitError(f"swiftkit serve did not become healthy within {timeout:.0f}s", f"see {log}")
