"""The web playground at / (static HTML/JS/CSS shipped in swiftkit/serve/ui/, no build step; --no-ui: off).

The page calls this server's own OpenAI routes with the key typed into it (kept in the browser's
localStorage), so it needs no route or permission of its own: the page is open, the API is not.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from swiftkit.serve.state import ServerState

UI_DIR = Path(__file__).resolve().parent.parent / "ui"


def install(app: FastAPI, state: ServerState) -> None:
    if not state.limits.ui:
        return

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(UI_DIR / "index.html", headers={"cache-control": "no-cache"})

    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
