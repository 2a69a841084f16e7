"""LoRA adapters loaded and unloaded while the server runs (--adapter-dir, --watch-adapters).

The admin routes (routes/adapters.py) and the folder watcher both come here. Paths are confined to the
--adapter-dir directories (resolved, so `..` and symlinks cannot leave them). A load is announced
(`/v1/models`, routing) only once the engine holds the weights; an unload stops routing first and the
engine drops the weights once no queued or running request uses them, so in-flight requests finish.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path

from swiftkit.artifacts import read_manifest
from swiftkit.console import console
from swiftkit.errors import SwiftkitError
from swiftkit.serve.errors import BadRequest, ModelNotFound
from swiftkit.serve.model import adapter_path
from swiftkit.serve.tenancy import Forbidden

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
WATCH_SECONDS = 2.0


@dataclass
class RuntimeAdapters:
    roots: list[Path]
    watch: bool = False
    state: object = None  # the ServerState whose served model and engine change (set once it is built)
    _busy: set[str] = field(default_factory=set)  # names being loaded or unloaded
    _watched: dict[str, Path] = field(default_factory=dict)  # names the watcher loaded -> their folder
    _failed: dict[Path, float] = field(default_factory=dict)  # folders that failed to load -> their mtime then

    @classmethod
    def from_dirs(cls, dirs: list[str], watch: bool) -> RuntimeAdapters:
        roots = []
        for d in dirs:
            root = Path(d).expanduser().resolve()
            if not root.is_dir():
                raise SwiftkitError(f"--adapter-dir {d} is not a directory", "create it, or give the folder holding the adapters")
            roots.append(root)
        return cls(roots, watch)

    async def load(self, name: str, lora_path: str) -> Path:
        served = self.state.served
        if not NAME.fullmatch(name):
            raise BadRequest(f"lora_name {name!r} is not a valid name (letters, digits, . _ -; at most 64)", param="lora_name")
        if name in self.state.model_names() or name in self._busy:  # (no deployment: --adapter-dir is single-model)
            raise BadRequest(f"the name {name} is already served (or being loaded); unload it first", param="lora_name",
                             code="adapter_exists")
        path = self._confined(lora_path)
        try:
            path = adapter_path(name, str(path), served.ref, label=f"lora_path {lora_path}")
        except SwiftkitError as exc:
            raise BadRequest(str(exc), param="lora_path") from None
        self._busy.add(name)
        try:
            await self.state.engine.change_adapter("load", name, str(path))
        except Exception as exc:  # the files passed the checks but PEFT could not load them
            raise BadRequest(f"the adapter at {lora_path} could not be loaded: {_reason(exc)}", param="lora_path") from None
        finally:
            self._busy.discard(name)
        served.adapters[name] = path
        console.print(f"[bold]adapter[/] loaded {name} from {path}")
        return path

    async def unload(self, name: str) -> None:
        served = self.state.served
        if name not in served.adapters or name in self._busy:
            raise ModelNotFound(f"no adapter named {name} is loaded; loaded: {', '.join(served.adapters) or 'none'}",
                                param="lora_name", code="adapter_not_found")
        self._busy.add(name)
        path = served.adapters.pop(name)  # new requests for it get 404 from here on
        try:
            await self.state.engine.change_adapter("unload", name)
        finally:
            self._busy.discard(name)
        console.print(f"[bold]adapter[/] unloaded {name} ({path})")

    def _confined(self, lora_path: str) -> Path:
        """The resolved path, if it lies inside an --adapter-dir (checked before anything is read from it)."""
        if "\0" in lora_path:
            raise BadRequest("lora_path holds a NUL character", param="lora_path")
        path = Path(lora_path).expanduser()
        if not path.is_absolute():
            path = self.roots[0] / path  # relative paths are relative to the first --adapter-dir
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) and resolved != root for root in self.roots):
            raise Forbidden(f"lora_path {lora_path} is outside the allowed adapter directories "
                            f"({', '.join(map(str, self.roots))})", param="lora_path", code="path_not_allowed")
        if not resolved.is_dir():
            raise BadRequest(f"lora_path {lora_path} is not a directory", param="lora_path")
        return resolved

    # -- the watched folders -------------------------------------------------------------------------
    async def watch_forever(self) -> None:
        while True:
            try:
                await self.rescan()
            except Exception as exc:  # a watcher that stops silently would be worse than a noisy one
                console.print(f"[red]adapter watcher:[/] {type(exc).__name__}: {exc}")
            await asyncio.sleep(WATCH_SECONDS)

    async def rescan(self) -> None:
        """Load the adapter folders that appeared, unload those the watcher loaded that disappeared."""
        present = {p.name: p for root in self.roots for p in sorted(root.iterdir()) if _complete_adapter(p)}
        for name in [n for n, p in self._watched.items() if present.get(n) != p]:
            if name in self.state.served.adapters:
                await self.unload(name)
            del self._watched[name]
        for name, path in present.items():
            if name in self._watched or name in self.state.served.adapters or not NAME.fullmatch(name):
                continue
            stamp = path.stat().st_mtime
            if self._failed.get(path) == stamp:
                continue  # failed before and unchanged since: said once, not every scan
            try:
                await self.load(name, str(path))
            except SwiftkitError as exc:
                self._failed[path] = stamp
                console.print(f"[yellow]adapter watcher:[/] {path} not loaded: {exc}")
                continue
            self._failed.pop(path, None)
            self._watched[name] = path


def _complete_adapter(path: Path) -> bool:
    """A finished adapter folder: a swiftkit artifact with its manifest (written last), or a PEFT directory
    with its config and weights. Hidden folders (`.name.partial`, a stage still writing) never count."""
    if path.name.startswith(".") or not path.is_dir():
        return False
    if (path / "swiftkit.json").is_file():
        return read_manifest(path) is not None
    return (path / "adapter_config.json").is_file() and any(
        (path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin"))


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
