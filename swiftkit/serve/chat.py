"""`swiftkit chat`: an interactive terminal chat over the serving engine (streaming, history, /reset)."""

from __future__ import annotations

import queue
import sys

from swiftkit.console import console, out
from swiftkit.serve.config import ChatConfig

HELP = "commands: /reset (forget the conversation), /exit (quit)"


def run(cfg: ChatConfig) -> None:
    from swiftkit.serve.engine.request import Request, SamplingParams
    from swiftkit.serve.terminal import terminal_engine

    served, engine = terminal_engine(cfg, "chat")
    engine.start()
    history: list[dict] = [{"role": "system", "content": cfg.system}] if cfg.system else []
    console.print(f"[bold]chatting with[/] {served.name}  ({HELP})")
    try:
        while True:
            try:
                user = input("\n>>> " if sys.stdin.isatty() else "")
            except EOFError:
                break
            text = user.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                break
            if text == "/reset":
                history = history[:1] if cfg.system else []
                console.print("[dim]conversation reset[/]")
                continue
            history.append({"role": "user", "content": user})
            ids = served.encode(served.render_chat(history), add_special_tokens=False)
            if len(ids) >= served.max_model_len:
                history.pop()
                console.print("[red]the conversation no longer fits the context; /reset to start over[/]")
                continue
            params = SamplingParams(max_tokens=min(cfg.max_tokens, served.max_model_len - len(ids)),
                                    temperature=cfg.temperature, top_p=cfg.top_p)
            outputs: queue.SimpleQueue = queue.SimpleQueue()
            engine.submit(Request(ids, params, sink=outputs.put))
            reply = ""
            while True:
                delta = outputs.get()
                reply += delta.text
                out.print(delta.text, end="", markup=False, highlight=False, soft_wrap=True)
                if delta.finished:
                    break
            out.print()
            history.append({"role": "assistant", "content": reply})
    except KeyboardInterrupt:
        pass
    finally:
        engine.stop()
