"""llama.cpp's own tools, driven from swiftkit: its HF→GGUF converter, its quantizer, its runtime.

Why these and not a hand-written writer: `convert_hf_to_gguf.py` knows every architecture's tensor
names, the Q/K row permutation llama.cpp's RoPE expects, and the BPE pre-tokenizer ids llama.cpp
keys its tokenization on; `llama_model_quantize` is the K-quant code llama.cpp itself ships. Both
come from the *same* llama.cpp release as the installed llama-cpp-python, which then loads the result
for verification — so a file that passes here was written and read by one version of llama.cpp.

The converter is a script in llama.cpp's source tree, not in the llama-cpp-python wheel: it is taken
from a checkout given with `--llama-cpp` / `SWIFTKIT_LLAMA_CPP`, else from the llama-cpp-python sdist
of the installed version (fetched once from PyPI, sha256-checked, cached under $SWIFTKIT_HOME).
"""

from __future__ import annotations

import ctypes
import io
import os
import re
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

from swiftkit.artifacts import swiftkit_home
from swiftkit.errors import SwiftkitError

CONVERTER = "convert_hf_to_gguf.py"
# Files of the llama.cpp tree the converter needs: itself, its per-architecture package, gguf-py.
CONVERTER_PARTS = (CONVERTER, "conversion/", "gguf-py/", "LICENSE")
# Converter output types; every other quant type is made from the f16 file by the quantizer.
CONVERTER_TYPES = ("f16", "bf16", "q8_0")
# A PEP 691 (JSON simple API) index: pypi.org or a mirror of it.
PYPI = os.environ.get("SWIFTKIT_PYPI_URL", "https://pypi.org/simple").rstrip("/")


class ExportError(SwiftkitError):
    """llama.cpp refused the model or could not write / read the file."""


def bindings_version() -> str:
    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        raise ExportError("export to GGUF needs llama-cpp-python, which is not installed", "pip install 'swiftkit[export]'") from None


def converter_dir(explicit: str | None = None) -> Path:
    """A llama.cpp source tree holding the converter (see the module docstring for the order)."""
    given = explicit or os.environ.get("SWIFTKIT_LLAMA_CPP")
    if given:
        root = Path(given).expanduser()
        if not (root / CONVERTER).is_file():
            raise ExportError(f"{root} is not a llama.cpp source tree (no {CONVERTER})", "point --llama-cpp at a llama.cpp checkout")
        return root
    version = bindings_version()
    root = swiftkit_home() / "llama.cpp" / version
    if not (root / CONVERTER).is_file():
        _fetch_converter(version, root)
    return root


def _fetch_converter(version: str, root: Path) -> None:
    import hashlib

    import httpx

    from swiftkit.console import console

    filename = f"llama_cpp_python-{version}.tar.gz"
    try:
        with console.status(f"fetching llama.cpp's converter ({filename}) from {PYPI}"):
            listing = httpx.get(
                f"{PYPI}/llama-cpp-python/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}, timeout=30, follow_redirects=True
            ).raise_for_status().json()
            sdist = next(f for f in listing["files"] if f["filename"] == filename)
            blob = httpx.get(sdist["url"], timeout=300, follow_redirects=True).raise_for_status().content
    except (httpx.HTTPError, StopIteration, KeyError, ValueError) as exc:
        raise ExportError(
            f"could not fetch the llama-cpp-python {version} sdist from {PYPI}: {exc}",
            "give a llama.cpp checkout with --llama-cpp DIR (or SWIFTKIT_LLAMA_CPP)",
        ) from None
    if hashlib.sha256(blob).hexdigest() != sdist["hashes"].get("sha256"):
        raise ExportError(f"the llama-cpp-python {version} sdist from {PYPI} does not match its published sha256")
    tmp = root.with_name(f".{root.name}.partial")
    prefix = f"{filename.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        members = []
        for member in tar.getmembers():
            rel = member.name.removeprefix(prefix)
            if member.name.startswith(prefix) and any(rel == p or rel.startswith(p) for p in CONVERTER_PARTS) and member.isfile():
                member.name = rel
                members.append(member)
        tar.extractall(tmp, members=members, filter="data")
    os.replace(tmp, root)  # complete or absent: a killed fetch leaves only the .partial dir


def convert(model_dir: Path, outfile: Path, outtype: str, llama_cpp_dir: str | None = None) -> str:
    """Run llama.cpp's converter on a HF-format directory; returns its log. One line on failure."""
    script = converter_dir(llama_cpp_dir) / CONVERTER
    proc = subprocess.run(
        [sys.executable, str(script), str(model_dir), "--outfile", str(outfile), "--outtype", outtype],
        capture_output=True,
        text=True,
        # The converter must use the gguf-py beside it (same release), not an installed `gguf`.
        env={k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"},
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not outfile.is_file():
        raise ExportError(f"llama.cpp's converter failed: {_reason(log)}", _hint(log))
    return log


def _reason(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for pattern in (r"pre-tokenizer was not recognized", r"not supported", r"Error|error"):
        hits = [ln for ln in lines if re.search(pattern, ln)]
        if hits:
            return hits[-1][:300]
    return lines[-1][:300] if lines else "no output"


def _hint(log: str) -> str | None:
    if "pre-tokenizer was not recognized" in log:
        # llama.cpp keys tokenization on a hash of how the tokenizer splits a fixed text; a tokenizer
        # trained from scratch (the toy's) matches no known model.
        return "llama.cpp only knows the tokenizers of the models listed in its convert_hf_to_gguf_update.py"
    if "not supported" in log:
        return "this architecture is not in this llama.cpp version's converter"
    return None


def quantize(source: Path, target: Path, quant: str) -> str:
    """llama.cpp's quantizer from an f16/bf16 GGUF, in a child process (it logs every tensor on the C stdio)."""
    proc = subprocess.run(
        [sys.executable, "-m", "swiftkit.gguf.llama_cpp", str(source), str(target), quant],
        capture_output=True,
        text=True,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0 or not target.is_file():
        raise ExportError(f"llama.cpp's quantizer failed for {quant}: {_reason(log)}")
    return log


def fallback_tensors(log: str) -> int:
    """Tensors llama.cpp stored in another type because their row width does not fit the K-quant block (256)."""
    found = re.search(r"(\d+) of \d+ tensor\(s\) required fallback quantization", log)
    return int(found.group(1)) if found else 0


def _quantize_main(source: str, target: str, quant: str) -> int:
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}", None)
    if ftype is None:
        print(f"error: llama.cpp has no quant type {quant}", file=sys.stderr)
        return 2
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    return int(llama_cpp.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params)))


def load(path: Path, n_ctx: int):
    """The GGUF in llama.cpp's runtime, logits kept for every position (for verification)."""
    from llama_cpp import Llama

    try:
        return Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            logits_all=True,
            verbose=False,
            n_threads=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
        )
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"llama.cpp could not load {path.name}: {exc}") from None


if __name__ == "__main__":
    sys.exit(_quantize_main(*sys.argv[1:4]))
