"""`swiftkit import`: a `.gguf` file becomes a normal safetensors model artifact.

transformers does the dequantization (`from_pretrained(..., gguf_file=)`) and rebuilds the
tokenizer and chat template from the GGUF metadata; this module refuses architectures it cannot
read with one line, drops the "quantized with gguf" mark that makes transformers refuse to save,
and records where the weights came from.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from swiftkit.artifacts import (
    Manifest,
    ServingInfo,
    artifact_writer,
    default_output,
    read_manifest,
    sha256_file,
    swiftkit_home,
    write_manifest,
)
from swiftkit.console import console, summary
from swiftkit.errors import ArtifactError
from swiftkit.gguf.config import ImportConfig
from swiftkit.gguf.metadata import GGUFInfo, read_info


def run(cfg: ImportConfig) -> Path:
    output = Path(cfg.output) if cfg.output else default_output("import")
    return import_gguf(Path(cfg.gguf), output, cfg.dtype, overwrite=cfg.overwrite, config=cfg.model_dump())


def imported_artifact(gguf_file: Path) -> Path:
    """The cached float32 import of `gguf_file` (made on first use), so any `--model X.gguf` just works."""
    stat = gguf_file.stat()
    # Keyed by path, size and mtime: hashing a multi-GB file on every resolve would cost seconds.
    key = hashlib.sha256(f"{gguf_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = swiftkit_home() / "gguf" / f"{gguf_file.stem}-{key}"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Two stages resolving the same file at once: one imports, the other waits and reuses it.
    with open(target.parent / f".{target.name}.importing", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if read_manifest(target) is None:
            console.print(f"importing {gguf_file} (first use; cached in {target})", highlight=False)
            cfg = ImportConfig(gguf=str(gguf_file), dtype="float32", output=str(target), overwrite=True)
            import_gguf(gguf_file, target, cfg.dtype, overwrite=True, config=cfg.model_dump())
    return target


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return list(GGUF_SUPPORTED_ARCHITECTURES)


def import_gguf(gguf_file: Path, output: Path, dtype: str, overwrite: bool = False, config: dict | None = None) -> Path:
    started = time.monotonic()
    with artifact_writer(output, overwrite=overwrite) as tmp:
        imported = dequantize_into(gguf_file, tmp, dtype)
        manifest = Manifest(
            kind="model",
            stage="import",
            parents=[str(gguf_file.resolve())],
            config=config or {},
            source=imported.source,
            metrics={"parameters": imported.parameters, "seconds": round(time.monotonic() - started, 2)},
            serving=imported.serving,
        )
        write_manifest(tmp, manifest)
    final = output.resolve()
    show_import(gguf_file, imported, manifest.metrics["seconds"], final)
    return final


@dataclass
class Imported:
    source: dict
    serving: ServingInfo
    parameters: int
    model_class: str


def dequantize_into(gguf_file: Path, directory: Path, dtype: str) -> Imported:
    """Write `gguf_file`'s weights (dequantized to `dtype`), tokenizer and generation config into `directory`."""
    if not gguf_file.is_file():
        raise ArtifactError(f"GGUF file not found: {gguf_file}")
    info = read_info(gguf_file)
    supported = supported_architectures()
    if info.architecture not in supported and info.architecture.replace("-", "") not in supported:
        import transformers

        raise ArtifactError(
            f"GGUF architecture '{info.architecture}' of {gguf_file.name} cannot be read by transformers {transformers.__version__}",
            f"supported: {', '.join(sorted(supported))}",
        )
    sha = sha256_file(gguf_file)
    with quiet_transformers(), console.status(f"dequantizing {gguf_file.name} ({info.quant_type}, {info.architecture}) to {dtype}"):
        model, tokenizer = _load(gguf_file, dtype)
    with quiet_transformers(), console.status(f"writing safetensors to {directory}"):
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    from swiftkit.loading import serving_info

    return Imported(
        source=_source(info, sha, gguf_file, dtype),
        serving=serving_info(tokenizer, model),
        parameters=sum(p.numel() for p in model.parameters()),
        model_class=type(model).__name__,
    )


def show_import(gguf_file: Path, imported: Imported, seconds: float, artifact: Path) -> None:
    source = imported.source
    summary(
        f"imported {gguf_file.name}",
        [
            ("architecture", f"{source['architecture']} -> {imported.model_class}"),
            ("source quant", f"{source['quant_type']} ({', '.join(f'{n} {t}' for t, n in source['tensor_types'].items())})"),
            ("weights", f"dequantized to {source['dtype']}, {imported.parameters / 1e6:.1f} M parameters"),
            ("chat template", "from GGUF metadata" if imported.serving.chat_template else "none in the file"),
            ("sha256", source["sha256"][:16]),
            ("time", f"{seconds:.1f} s"),
        ],
        artifact=str(artifact),
    )


@contextlib.contextmanager
def quiet_transformers():
    """The rich status line replaces transformers' tqdm bars while it dequantizes and saves."""
    from unittest import mock

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # The GGUF loader imports tqdm itself, past transformers' own switch: give it a disabled one.
    silent = functools.partial(gguf_utils.tqdm, disable=True)
    try:
        with mock.patch.object(gguf_utils, "tqdm", silent):
            yield
    finally:
        hf_logging.enable_progress_bar()


def _load(gguf_file: Path, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=getattr(torch, dtype)
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    except (ValueError, KeyError, NotImplementedError) as exc:  # tensor types or metadata transformers cannot map
        raise ArtifactError(f"transformers could not load {gguf_file.name}: {exc}") from None
    # transformers marks a GGUF-loaded model as quantized and then refuses save_pretrained; the
    # weights are plain dequantized tensors by now, so the mark is dropped, not the data.
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    model.config.dtype = dtype
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _source(info: GGUFInfo, sha: str, gguf_file: Path, dtype: str) -> dict:
    return {
        "format": "gguf",
        "file": str(gguf_file.resolve()),
        "sha256": sha,
        "bytes": gguf_file.stat().st_size,
        "quant_type": info.quant_type,
        "tensor_types": info.tensor_types,
        "architecture": info.architecture,
        "name": info.name,
        "dequantized": True,
        "dtype": dtype,
    }
