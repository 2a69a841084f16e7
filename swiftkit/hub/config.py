"""Configs of the hub commands: download, push, models (light module: no hub client imported)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from swiftkit.config import StageConfig, positional

Hub = Literal["auto", "hf", "modelscope"]


class DownloadConfig(StageConfig):
    model_id: str = positional(description="Hub id org/name, optionally org/name@revision.")
    hub: Hub = Field(
        "auto", description="hf, modelscope, or auto (HF, then ModelScope if HF is unreachable)."
    )
    revision: str | None = Field(
        None, description="Branch, tag or commit (default: the id's @rev, else the main branch)."
    )
    include: list[str] = Field(
        default_factory=list,
        description="Only files matching these glob patterns (replaces the default selection).",
    )
    exclude: list[str] = Field(default_factory=list, description="Skip files matching these glob patterns.")
    gguf_file: str | None = Field(
        None,
        description="Download one .gguf (file name, or a quant type such as Q4_K_M) and import it as safetensors "
        "(default for a repo with only GGUF files: the highest-precision one).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="dtype a GGUF download is dequantized to.")
    token: str | None = Field(
        None, description="Access token (default: HF_TOKEN / MODELSCOPE_API_TOKEN or a saved login)."
    )
    endpoint: str | None = Field(
        None, description="Hub endpoint or mirror URL (default: HF_ENDPOINT / MODELSCOPE_ENDPOINT)."
    )
    timeout: float = Field(
        10.0, gt=0, description="Seconds a network call may wait for the server before failing."
    )
    max_workers: int = Field(8, ge=1, description="Files downloaded in parallel.")


class PushConfig(StageConfig):
    artifact: str = positional(description="Model or adapter artifact directory to publish.")
    repo_id: str = positional(description="Target repository org/name.")
    hub: Literal["hf", "modelscope"] = Field("hf", description="hf or modelscope.")
    private: bool = Field(False, description="Create the repository as private.")
    dry_run: bool = Field(False, description="List exactly what would be uploaded, upload nothing.")
    token: str | None = Field(
        None, description="Write token (default: HF_TOKEN / MODELSCOPE_API_TOKEN or a saved login)."
    )
    endpoint: str | None = Field(
        None, description="Hub endpoint URL (default: HF_ENDPOINT / MODELSCOPE_ENDPOINT)."
    )
    revision: str | None = Field(None, description="Branch to commit to (default: main).")
    message: str | None = Field(None, description="Commit message.")
    timeout: float = Field(
        30.0, gt=0, description="Seconds a network call may wait for the server before failing."
    )


class ModelsConfig(StageConfig):
    json_output: bool = Field(False, description="Print the list as JSON.")
