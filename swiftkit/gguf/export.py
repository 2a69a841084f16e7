"""`swiftkit export`: a model (adapter chains merged) as GGUF files llama.cpp and Ollama run, verified in llama.cpp.

Same failure rules as `quantize`: everything is written into the artifact's temp dir, every file is
loaded back by llama.cpp and checked against the transformers model (swiftkit/gguf/verify.py), and a
failed check moves the files and report to `<output>.failed/` with no manifest.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from swiftkit.artifacts import Manifest, artifact_writer, default_output, keep_failed, sha256_file, write_manifest
from swiftkit.console import console
from swiftkit.errors import ArtifactError, SwiftkitError
from swiftkit.gguf.config import EXPORT_QUANTS, ExportConfig
from swiftkit.resolve import resolve_model_ref


def run(cfg: ExportConfig) -> Path:
    from swiftkit.gguf import llama_cpp

    started = time.time()
    quants = _check_quants(cfg.quant)
    version = llama_cpp.bindings_version()
    mref = resolve_model_ref(cfg.model)
    if mref.is_quantized:
        raise ArtifactError(f"{mref.path} is already quantized", "export the full-precision model it came from; llama.cpp quantizes it")
    converter = llama_cpp.converter_dir(cfg.llama_cpp)  # fetched (once) before any weights are loaded
    output = Path(cfg.output) if cfg.output else default_output("export")

    from transformers.utils import logging as hf_logging

    from swiftkit.gguf.verify import agreement, failures, reference
    from swiftkit.loading import full_weights_dir, load_model, serving_info

    hf_logging.disable_progress_bar()  # the status lines replace transformers' per-load bars
    with console.status("loading the model (adapters merged) as the reference, in float32"):
        model, tokenizer, mref = load_model(mref, dtype="float32", device="cpu", trust_remote_code=cfg.trust_remote_code)
    serving = mref.manifest.serving if mref.manifest and mref.manifest.serving else serving_info(tokenizer, model)
    with console.status(f"reference: greedy answers to {cfg.verify_prompts} prompts and perplexity in transformers"):
        ref = reference(model, tokenizer, serving, cfg.verify_prompts, cfg.verify_tokens)
    generation = model.generation_config.to_diff_dict() if model.generation_config is not None else {}
    context = getattr(model.config, "max_position_embeddings", None)

    files: dict[str, dict] = {}
    with artifact_writer(output, overwrite=cfg.overwrite) as tmp, full_weights_dir(mref, model, tokenizer) as source:
        del model
        name = output.resolve().name
        f16 = tmp / f"{name}-f16.gguf"
        for quant in quants:
            target = tmp / f"{name}-{quant}.gguf"
            with console.status(f"writing {target.name} with llama.cpp ({version})"):
                if quant in llama_cpp.CONVERTER_TYPES:
                    log = llama_cpp.convert(source, target, quant, cfg.llama_cpp)
                else:
                    if not f16.is_file():
                        llama_cpp.convert(source, f16, "f16", cfg.llama_cpp)
                    log = llama_cpp.quantize(f16, target, quant)
            with console.status(f"verifying {target.name} in llama.cpp against transformers"):
                check = agreement(target, ref)
            files[quant] = {
                "file": target.name,
                "bytes": target.stat().st_size,
                "sha256": sha256_file(target),
                "fallback_tensors": llama_cpp.fallback_tensors(log),
                "verification": check,
                "failures": failures(check, exact=quant in ("f16", "bf16"), max_ppl_increase=cfg.max_ppl_increase),
            }
        if "f16" not in quants:
            f16.unlink(missing_ok=True)  # only the quantizer's input
        _show(files, ref.ppl)
        report = {"llama_cpp_python": version, "files": files}
        broken = {q: f["failures"] for q, f in files.items() if f["failures"]}
        if broken:
            failed = keep_failed(tmp, output, report)
            raise SwiftkitError(
                "export failed verification: " + "; ".join(f"{q}: {', '.join(r)}" for q, r in broken.items()),
                f"nothing was written to {output}; the files and report are in {failed}",
            )
        if cfg.format == "ollama":
            from swiftkit.gguf.ollama import modelfile

            (tmp / "Modelfile").write_text(modelfile(files[quants[0]]["file"], serving, tokenizer, context, generation), encoding="utf-8")
        write_manifest(
            tmp,
            Manifest(
                kind="export",
                stage="export",
                parents=[str(mref.path)],
                base_model=str(mref.base_path),
                config=cfg.model_dump(),
                serving=serving,
                metrics={"seconds": round(time.time() - started, 1), "ppl_reference": round(ref.ppl, 4)},
                export={
                    "format": cfg.format,
                    "files": files,
                    "llama_cpp_python": version,
                    "converter": str(converter),
                    "merged_adapters": [str(a) for a in mref.adapters],
                },
            ),
        )
    final = output.resolve()
    console.print(f"[bold]artifact[/] {final}" + (f"  (ollama create NAME -f {final / 'Modelfile'})" if cfg.format == "ollama" else ""))
    return final


def _check_quants(requested: list[str]) -> list[str]:
    quants = list(dict.fromkeys(q.lower() for q in requested))
    unknown = [q for q in quants if q not in EXPORT_QUANTS]
    if unknown or not quants:
        raise SwiftkitError(f"unknown --quant {', '.join(unknown) or '(none)'}", f"choose from {', '.join(EXPORT_QUANTS)}")
    return quants


def _show(files: dict[str, dict], ppl_reference: float) -> None:
    table = Table(title="export (llama.cpp vs transformers)", title_justify="left")
    # Short headers: the table must stay readable in an 80-column CI log.
    for col in ("quant", "MB", "greedy =", "tokens =", "max Δlogp", "ppl (Δ)", "fallback", "check"):
        table.add_column(col)
    for quant, f in files.items():
        v = f["verification"]
        ties = f"+{v['greedy_near_ties']}~" if v["greedy_near_ties"] else ""
        table.add_row(
            quant,
            f"{f['bytes'] / 1e6:.1f}",
            f"{v['greedy_equal']}/{v['prompts']}{ties}",
            f"{v['tokenization_equal']}/{v['prompts']}",
            f"{v['max_abs_logprob_delta']:.4f}",
            f"{v['ppl']:.4g} ({(v['ppl'] / ppl_reference - 1) * 100:+.1f}%)",
            str(f["fallback_tensors"]),
            "[red]failed[/]" if f["failures"] else "[green]passed[/]",
        )
    console.print(table)
    console.print(
        f"transformers reference perplexity {ppl_reference:.4g}; greedy = counts prompts whose greedy tokens llama.cpp"
        " reproduces (+N~: diverged only at a near-tie); fallback: tensors llama.cpp stored in another type",
        highlight=False,
    )
