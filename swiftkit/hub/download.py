"""`swiftkit download`: fetch a repo with huggingface_hub / modelscope, verify it, write a model artifact.

The hub clients do the transfer (parallel files, Range resumes, progress bars); this module
chooses the files, bounds every network wait, checks every file against the checksums the hub
publishes, and records the result as a `stage: download` artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from swiftkit.artifacts import (
    HUB_ID,
    Manifest,
    ServingInfo,
    artifact_writer,
    default_output,
    partial_dir,
    write_manifest,
)
from swiftkit.console import console, summary
from swiftkit.errors import SwiftkitError
from swiftkit.hub.config import DownloadConfig
from swiftkit.hub.errors import FALLBACK_HINT, HubUnreachable, translate

# What a model needs to load, train and serve; duplicate weight formats and training state are skipped.
DEFAULT_INCLUDE = [
    "*.safetensors", "*.json", "*.jinja", "*.model", "*.tiktoken", "*.txt", "*.py",
    "README*", "LICENSE*", "NOTICE*", "USE_POLICY*",
]
# No ".*" for hidden files: modelscope reads ".*" in a pattern as a regex and would skip everything.
DEFAULT_EXCLUDE = [
    "*.bin", "*.pth", "*.pt", "*.ckpt", "*.gguf", "*.h5", "*.msgpack", "*.onnx", "*.ot", "optimizer*",
    "original/*", "onnx/*", "openvino/*", "gguf/*", "runs/*",
]
# Repos that only publish PyTorch pickles: take those (and only the weights) instead.
BIN_FALLBACK = "pytorch_model*.bin"


@dataclass
class RemoteFile:
    """What the hub publishes about one file: size, and a checksum when it has one."""

    size: int | None
    sha256: str | None = None  # HF: LFS files; ModelScope: every file
    git_sha1: str | None = None  # HF: git blob id of non-LFS files


def split_ref(ref: str) -> tuple[str, str | None]:
    repo_id, _, revision = ref.partition("@")
    return repo_id, revision or None


# For a repo of GGUF files only, the file imported when --gguf-file is not given: the most precise.
GGUF_PREFERENCE = (
    "F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1",
    "IQ4_XS", "IQ4_NL", "Q4_0", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K",
)


def choose_gguf(cfg: DownloadConfig, names: list[str]) -> str | None:
    """The .gguf file to download and import, or None for a normal (safetensors) download."""
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
    weights = any(n.endswith((".safetensors", ".bin")) for n in names)
    if not cfg.gguf_file and (weights or not ggufs or cfg.include):
        return None
    if cfg.gguf_file:
        wanted = cfg.gguf_file.lower()
        found = [n for n in ggufs if n.lower() == wanted or n.rsplit("/", 1)[-1].lower() == wanted]
        found = found or [n for n in ggufs if wanted in n.rsplit("/", 1)[-1].lower()]
    else:
        found = [n for q in GGUF_PREFERENCE for n in ggufs if q.lower() in n.lower()] or ggufs
    if not found:
        raise SwiftkitError(
            f"no .gguf file matches --gguf-file {cfg.gguf_file}",
            f"the repo has: {', '.join(ggufs)}" if ggufs else "the repo has no .gguf files",
        )
    return found[0]


def file_patterns(cfg: DownloadConfig, names: list[str]) -> tuple[list[str], list[str]]:
    """(allow, ignore) globs: the user's --include, else the default selection; plus --exclude."""
    gguf = choose_gguf(cfg, names)
    if gguf:
        return [gguf, "README*", "LICENSE*"], []
    if cfg.include:
        return list(cfg.include), list(cfg.exclude)
    allow, ignore = list(DEFAULT_INCLUDE), list(DEFAULT_EXCLUDE)
    if not any(n.endswith(".safetensors") for n in names):
        allow.append(BIN_FALLBACK)
        ignore.remove("*.bin")
    return allow, ignore + list(cfg.exclude)


def run(cfg: DownloadConfig) -> Path:
    output = Path(cfg.output) if cfg.output else default_output("download")
    return fetch(cfg, lambda hub: output)


def fetch(cfg: DownloadConfig, output_for: Callable[[str], Path]) -> Path:
    """Download `cfg.model_id` from the chosen hub(s) into the artifact `output_for(hub)`."""
    repo_id, ref_revision = split_ref(cfg.model_id)
    if not HUB_ID.match(cfg.model_id):
        raise SwiftkitError(f"not a hub id: {cfg.model_id}", "use org/name or org/name@revision")
    revision = cfg.revision or ref_revision
    hubs = [cfg.hub] if cfg.hub != "auto" else (["hf"] if cfg.endpoint else ["hf", "modelscope"])
    failures: list[HubUnreachable] = []
    for hub in hubs:
        try:
            return _download_artifact(cfg, hub, repo_id, revision, output_for(hub))
        except HubUnreachable as exc:
            failures.append(exc)
            if hub != hubs[-1]:
                console.print(f"[yellow]{exc.message}; trying {hubs[-1]}[/]", highlight=False)
    if len(failures) == 1:
        raise failures[0]
    raise HubUnreachable("; ".join(f.message for f in failures), FALLBACK_HINT)


def _download_artifact(
    cfg: DownloadConfig, hub: str, repo_id: str, revision: str | None, output: Path
) -> Path:
    started = time.monotonic()
    # Keep the partial dir on failure: a re-run skips the files already fetched (resume).
    try:
        with artifact_writer(output, overwrite=cfg.overwrite, keep_partial=True) as tmp:
            backend = _download_hf if hub == "hf" else _download_modelscope
            commit, endpoint, expected = backend(cfg, repo_id, revision, tmp)
            console.print(f"verifying {len(expected)} files", highlight=False)
            files, checked = verify(tmp, expected)
            shutil.rmtree(tmp / ".cache", ignore_errors=True)  # the clients' resume bookkeeping
            imported = _import_gguf(tmp, files, cfg.dtype)
            seconds = time.monotonic() - started
            total = sum(f["size"] for f in files.values())
            manifest = Manifest(
                kind="model",
                stage="download",
                parents=[f"{repo_id}@{commit or revision or default_revision(hub)}"],
                config=cfg.model_dump(exclude={"token"}),
                source={
                    "hub": hub,
                    "id": repo_id,
                    "revision": revision or default_revision(hub),
                    "commit": commit,
                    "endpoint": endpoint,
                    "files": files,
                    "verification": {"passed": True, **checked},
                    **({"gguf": imported.source} if imported else {}),
                },
                metrics={"files": len(files), "bytes": total, "seconds": round(seconds, 2)},
                serving=imported.serving if imported else serving_from_files(tmp),
            )
            write_manifest(tmp, manifest)
    except BaseException:
        _drop_if_empty(partial_dir(output))
        raise
    final = output.resolve()
    summary(
        f"downloaded {repo_id}",
        [
            ("hub", f"{hub} ({endpoint})"),
            ("commit", commit or "-"),
            ("files", len(files)),
            ("size", f"{total / 1e6:.1f} MB"),
            ("verified", _checked_text(checked)),
            ("time", f"{seconds:.1f} s ({total / 1e6 / max(seconds, 1e-9):.1f} MB/s)"),
        ],
        artifact=str(final),
    )
    return final


def _import_gguf(tmp: Path, files: dict[str, dict], dtype: str):
    """A downloaded (and verified) .gguf is kept under gguf/ and imported beside it as safetensors."""
    name = next((n for n in files if n.lower().endswith(".gguf")), None)
    if name is None:
        return None
    from swiftkit.gguf.importer import dequantize_into  # lazy: imports torch and transformers

    kept = tmp / "gguf" / Path(name).name
    kept.parent.mkdir(exist_ok=True)
    os.replace(tmp / name, kept)
    return dequantize_into(kept, tmp, dtype)


def default_revision(hub: str) -> str:
    return "master" if hub == "modelscope" else "main"


def _checked_text(checked: dict[str, int]) -> str:
    return ", ".join(f"{n} {k.removesuffix('_checked')}" for k, n in checked.items() if n) or "sizes only"


def _drop_if_empty(tmp: Path) -> None:
    """Remove a partial download that holds nothing worth resuming."""
    if tmp.is_dir() and not any(p.is_file() for p in tmp.rglob("*") if ".cache" not in p.parts):
        shutil.rmtree(tmp, ignore_errors=True)


# --- Hugging Face -----------------------------------------------------------------------------


class EndpointTimeout(Exception):
    """A hub request got no answer within --timeout: final, not retried (see bound_hf_timeouts)."""


def bound_hf_timeouts(timeout: float) -> None:
    """Give every huggingface_hub request a deadline, and make missing it final.

    The client's API calls have no timeout by default, and when a file's metadata request times
    out it retries with a 60 s timeout and backoff, per file: minutes against a silent endpoint.
    This transport caps each request at `timeout` and turns a timeout into an error the client
    does not retry. A stream that stalls mid-file still gets the client's own Range resumes
    (those time out while reading the body, after this transport has returned).
    """
    import httpx2
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils._http import hf_request_event_hook

    class DeadlineTransport(httpx2.HTTPTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            request.extensions["timeout"] = httpx2.Timeout(timeout).as_dict()
            try:
                return super().handle_request(request)
            except httpx2.TimeoutException as exc:
                raise EndpointTimeout(f"no answer from {request.url.host} within {timeout:g}s") from exc

    def factory() -> httpx2.Client:
        # Same client as huggingface_hub's default_client_factory, plus the deadline transport.
        return httpx2.Client(
            event_hooks={"request": [hf_request_event_hook]}, follow_redirects=True, timeout=timeout,
            transport=DeadlineTransport(),
        )

    huggingface_hub.set_client_factory(factory)
    # File GETs pass their own timeout, read from this module constant at call time.
    constants.HF_HUB_DOWNLOAD_TIMEOUT = timeout


BYTES_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B [{elapsed}<{remaining}, {rate_fmt}]"


def _progress_bars():
    """huggingface_hub's own bars, with the ETA its byte bars leave out (they show bytes and speed)."""
    from huggingface_hub.utils import tqdm

    class ByteBars(tqdm):
        def __init__(self, *args, **kwargs):
            if kwargs.get("unit") == "B":
                kwargs["bar_format"] = BYTES_BAR
            super().__init__(*args, **kwargs)

    return ByteBars


def _download_hf(cfg: DownloadConfig, repo_id: str, revision: str | None, dest: Path):
    from huggingface_hub import HfApi, constants, snapshot_download

    endpoint = (cfg.endpoint or constants.ENDPOINT).rstrip("/")
    what = f"{repo_id}@{revision or 'main'}"
    bound_hf_timeouts(cfg.timeout)
    with _hub_errors(what, endpoint, cfg.timeout):
        info = HfApi(endpoint=endpoint, token=cfg.token).model_info(
            repo_id, revision=revision, files_metadata=True, timeout=cfg.timeout
        )
        remote = {
            s.rfilename: RemoteFile(s.size, s.lfs.sha256 if s.lfs else None, None if s.lfs else s.blob_id)
            for s in info.siblings or []
        }
        allow, ignore, selected = _select(cfg, remote, what, endpoint)
        # Passing the commit (not the branch) pins every file to the listing just verified against.
        snapshot_download(
            repo_id,
            revision=info.sha,
            local_dir=dest,
            allow_patterns=allow,
            ignore_patterns=ignore,
            endpoint=endpoint,
            token=cfg.token,
            etag_timeout=cfg.timeout,
            max_workers=cfg.max_workers,
            tqdm_class=_progress_bars(),
        )
    return info.sha, endpoint, {name: remote[name] for name in selected}


@contextlib.contextmanager
def _hub_errors(what: str, endpoint: str, timeout: float) -> Iterator[None]:
    """Turn a hub client's exception into swiftkit's one-line error (the same mapping for both hubs)."""
    try:
        yield
    except SwiftkitError:
        raise
    except Exception as exc:
        if (mapped := translate(exc, what=what, endpoint=endpoint, timeout=timeout)) is not None:
            raise mapped from None
        raise


def _select(cfg: DownloadConfig, remote: dict, what: str, endpoint: str) -> tuple[list[str], list[str], list[str]]:
    """The include/exclude patterns and the repo files they select (the same rules for both hubs)."""
    from huggingface_hub.utils import filter_repo_objects

    allow, ignore = file_patterns(cfg, list(remote))
    selected = list(filter_repo_objects(list(remote), allow_patterns=allow, ignore_patterns=ignore))
    if not selected:
        raise SwiftkitError(
            f"no files of {what} match the selection ({len(remote)} files in the repo)", "adjust --include / --exclude"
        )
    console.print(f"downloading {len(selected)} of {len(remote)} files of {what} from {endpoint}", highlight=False)
    return allow, ignore, selected


# --- ModelScope -------------------------------------------------------------------------------


def _download_modelscope(cfg: DownloadConfig, repo_id: str, revision: str | None, dest: Path):
    # modelscope_hub reads its timeouts from the environment once, at import.
    for var in ("MODELSCOPE_API_TIMEOUT", "MODELSCOPE_API_CONNECT_TIMEOUT", "MODELSCOPE_DOWNLOAD_TIMEOUT"):
        os.environ.setdefault(var, str(max(int(cfg.timeout), 1)))

    # modelscope.snapshot_download delegates to modelscope_hub; calling that directly skips the torch import.
    from modelscope_hub import HubApi

    api = HubApi(endpoint=cfg.endpoint, token=cfg.token)
    endpoint = api._config.endpoint.rstrip("/")
    revision = revision or default_revision("modelscope")
    what = f"{repo_id}@{revision}"
    with _hub_errors(what, endpoint, cfg.timeout):
        remote = {
            f.path: RemoteFile(f.size, f.sha256)
            for f in api.list_repo_files(repo_id, "model", revision=revision)
            if not f.is_dir
        }
        allow, ignore, selected = _select(cfg, remote, what, endpoint)
        api.download_repo(
            repo_id, "model", revision=revision, local_dir=dest, allow_patterns=allow, ignore_patterns=ignore,
            max_workers=cfg.max_workers,
        )
    # ModelScope's listing API names no commit for a branch: the manifest records the revision only.
    return None, endpoint, {name: remote[name] for name in selected}


# --- verification -----------------------------------------------------------------------------


def hash_file(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) in one read: git's id hashes a 'blob <size>\\0' header, then the bytes."""
    sha256 = hashlib.sha256()
    sha1 = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            sha256.update(block)
            sha1.update(block)
    return sha256.hexdigest(), sha1.hexdigest()


def verify(root: Path, expected: dict[str, RemoteFile]) -> tuple[dict[str, dict], dict[str, int]]:
    """Check every file against the hub's published size and checksum; remove the bad ones and fail."""
    files: dict[str, dict] = {}
    checked = {"sha256_checked": 0, "git_sha1_checked": 0, "size_checked": 0}
    bad: list[str] = []
    for name, remote in sorted(expected.items()):
        path = root / name
        if not path.is_file():
            bad.append(f"{name}: missing after download")
            continue
        size = path.stat().st_size
        sha256, sha1 = hash_file(path)
        problem = None
        if remote.size is not None and size != remote.size:
            problem = f"size {size} != {remote.size}"
        elif remote.sha256 and sha256 != remote.sha256:
            problem = f"sha256 {sha256[:12]}… != published {remote.sha256[:12]}…"
        elif remote.git_sha1 and sha1 != remote.git_sha1:
            problem = f"git blob id {sha1[:12]}… != published {remote.git_sha1[:12]}…"
        if problem:
            bad.append(f"{name}: {problem}")
            path.unlink()  # so that a re-run fetches it again instead of trusting it
            continue
        checked["size_checked"] += remote.size is not None
        checked["sha256_checked"] += bool(remote.sha256)
        checked["git_sha1_checked"] += bool(remote.git_sha1)
        files[name] = {"size": size, "sha256": sha256}
    if bad:
        raise SwiftkitError(
            f"download verification failed for {len(bad)} file(s): {'; '.join(bad)}",
            "the bad files were removed; re-run the same command to fetch them again (good ones are kept)",
        )
    return files, checked


# --- serving info -----------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def serving_from_files(model_dir: Path) -> ServingInfo | None:
    """Chat template and special tokens straight from the tokenizer files (no transformers import)."""
    tok = _read_json(model_dir / "tokenizer_config.json")
    if not tok:
        return None
    template = None
    if (model_dir / "chat_template.jinja").is_file():
        template = (model_dir / "chat_template.jinja").read_text(encoding="utf-8")
    elif isinstance(chat := _read_json(model_dir / "chat_template.json").get("chat_template"), str):
        template = chat
    elif isinstance(tok.get("chat_template"), str):
        template = tok["chat_template"]
    eos_ids = _read_json(model_dir / "generation_config.json").get("eos_token_id")
    if eos_ids is None:
        eos_ids = _read_json(model_dir / "config.json").get("eos_token_id")
    eos_ids = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids or [])
    return ServingInfo(
        chat_template=template,
        eos_token=_token_text(tok.get("eos_token")),
        eos_token_ids=eos_ids,
        pad_token=_token_text(tok.get("pad_token")),
        bos_token=_token_text(tok.get("bos_token")),
    )
