"""AWQ through GPTQModel (AutoAWQ is deprecated upstream): `gemm` layout with zero point.

Zero-point (asymmetric) gemm is the AWQ layout vLLM, SGLang and transformers load. On CPU, GPTQModel
needs its pure-torch AWQ kernel for the quantization forward passes, and that kernel runs only in
float16/bfloat16 (float16 is also what AWQ checkpoints conventionally hold).
"""

from __future__ import annotations

from pathlib import Path

from swiftkit.quant.gptq import gptqmodel_env, quantize_gptqmodel


def quantize(
    source: Path,
    output: Path,
    bits: int,
    group_size: int,
    samples: list[list[int]],
    probe,
    dtype,
    trust_remote_code: bool = False,
):
    gptqmodel_env()
    from gptqmodel import BACKEND, QuantizeConfig
    from gptqmodel.quantization import FORMAT, METHOD

    config = QuantizeConfig(
        bits=bits,
        group_size=group_size,
        sym=False,
        method=METHOD.AWQ,
        format=FORMAT.GEMM,
        offload_to_disk=False,
    )
    return quantize_gptqmodel(
        source,
        output,
        config,
        samples,
        probe,
        dtype,
        backend=BACKEND.AWQ_TORCH,
        trust_remote_code=trust_remote_code,
    )
