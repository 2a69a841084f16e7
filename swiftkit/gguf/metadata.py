"""What a GGUF file says about itself (architecture, quant type, name), read with llama.cpp's `gguf` package."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from swiftkit.errors import ArtifactError


@dataclass
class GGUFInfo:
    path: Path
    architecture: str
    quant_type: str  # llama.cpp's file type, e.g. Q4_K_M, Q8_0, F16
    name: str | None
    tensor_types: dict[str, int]  # GGML type -> tensor count (a "Q4_K_M" file mixes several)
    context_length: int | None


def read_info(path: str | Path) -> GGUFInfo:
    """Header and tensor table only (memory-mapped, no weights are read)."""
    import gguf

    path = Path(path)
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError) as exc:  # bad magic, truncated header, unreadable file
        raise ArtifactError(f"{path} is not a readable GGUF file: {exc}") from None

    def field(key: str):
        item = reader.fields.get(key)
        return item.contents() if item is not None else None

    arch = field("general.architecture")
    if not arch:
        raise ArtifactError(f"{path} has no general.architecture in its GGUF metadata")
    file_type = field("general.file_type")
    try:
        quant = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_") if file_type is not None else None
    except ValueError:
        quant = None
    types = Counter(t.tensor_type.name for t in reader.tensors)
    return GGUFInfo(
        path=path,
        architecture=str(arch),
        quant_type=quant or "unknown",
        name=field("general.name"),
        tensor_types=dict(types.most_common()),
        context_length=field(f"{arch}.context_length"),
    )
