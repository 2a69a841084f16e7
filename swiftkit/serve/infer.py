"""`swiftkit infer`: a prompts file through the serving engine, written as results jsonl (resumable).

Rows: `messages` (chat, rendered with the model's template), `question`/`query` (one user turn), or
`prompt` (raw text, no template). A row's `id` (else its line number) names its result; ids already
in --output are skipped, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

from swiftkit.console import console, progress, summary
from swiftkit.errors import DataError
from swiftkit.serve.config import InferConfig
from swiftkit.serve.model import ServedModel, read_jsonl
from swiftkit.serve.terminal import terminal_engine

ROW_KEYS = ("messages", "question", "query", "prompt")


def row_prompt(served: ServedModel, row: dict, system: str | None, where: str) -> list[int]:
    if "messages" in row:
        messages = list(row["messages"])
    elif "question" in row or "query" in row:
        messages = [{"role": "user", "content": str(row.get("question", row.get("query")))}]
    elif "prompt" in row:
        return served.encode(str(row["prompt"]), add_special_tokens=True)
    else:
        raise DataError(f"{where}: a row needs `messages`, `question`/`query` or `prompt`")
    if system and messages and messages[0].get("role") != "system":
        messages.insert(0, {"role": "system", "content": system})
    return served.encode(served.render_chat(messages), add_special_tokens=False)


def run(cfg: InferConfig) -> None:
    from swiftkit.serve.engine.request import Request, SamplingParams

    data = Path(cfg.data)
    if not data.is_file():
        raise DataError(f"prompts file not found: {data}")
    output = Path(cfg.output) if cfg.output else data.with_suffix(".results.jsonl")
    rows = read_jsonl(data)
    done = {json.loads(line)["id"] for line in output.read_text().splitlines() if line.strip()} if output.is_file() else set()
    todo = [(str(row.get("id", i)), row) for i, row in enumerate(rows) if str(row.get("id", i)) not in done]
    for rid, row in todo:  # fail on a malformed row before spending time loading the model
        if not any(key in row for key in ROW_KEYS):
            raise DataError(f"{data}: row {rid}: a row needs `messages`, `question`/`query` or `prompt`",
                            "see docs/serve.md#swiftkit-infer")
    if not todo:
        console.print(f"all {len(rows)} rows already in {output}")
        return
    served, engine = terminal_engine(cfg, "infer")
    prompts = {rid: row_prompt(served, row, cfg.system, f"{data}: row {rid}") for rid, row in todo}
    results: queue.SimpleQueue = queue.SimpleQueue()
    started = time.perf_counter()
    tokens = 0
    engine.start()
    try:
        pending = iter(todo)
        in_flight = 0

        def submit_next() -> bool:
            for rid, _ in pending:
                ids = prompts[rid][: served.max_model_len - 1]
                params = SamplingParams(max_tokens=max(1, min(cfg.max_tokens, served.max_model_len - len(ids))),
                                        temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)
                engine.submit(Request(ids, params, sink=lambda out, rid=rid: results.put((rid, out))))
                return True
            return False

        # Keep the engine's batch full without overfilling its queue.
        while in_flight < cfg.max_num_seqs + cfg.max_queue // 2 and submit_next():
            in_flight += 1
        texts: dict[str, str] = {}
        with progress() as bar, open(output, "a", encoding="utf-8") as fh:
            task = bar.add_task("infer", total=len(todo), info="")
            while in_flight:
                rid, out = results.get()
                texts[rid] = texts.get(rid, "") + out.text
                if not out.finished:
                    continue
                tokens += out.completion_tokens
                fh.write(json.dumps({"id": rid, "response": texts.pop(rid), "finish_reason": out.finish_reason,
                                     "prompt_tokens": out.prompt_tokens, "completion_tokens": out.completion_tokens},
                                    ensure_ascii=False) + "\n")
                fh.flush()
                in_flight -= 1
                bar.update(task, advance=1, info=f"{tokens / (time.perf_counter() - started):.0f} tok/s")
                if submit_next():
                    in_flight += 1
    finally:
        engine.stop()
    elapsed = time.perf_counter() - started
    summary("swiftkit infer", [("rows", len(todo)), ("skipped (already done)", len(done)),
                               ("generated tokens", tokens), ("tok/s", tokens / elapsed), ("time", f"{elapsed:.1f}s")],
            artifact=str(output))
