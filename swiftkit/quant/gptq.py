"""GPTQ through GPTQModel (the maintained successor of AutoGPTQ): v1 `gptq` layout, sym, no act-order.

v1 with `sym=True, desc_act=False` is the layout vLLM, SGLang and transformers all load without
conversion (and the one whose `qzeros` every kernel agrees on).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
from pathlib import Path


def gptqmodel_env() -> None:
    # GPTQModel's CPU worker pool otherwise asks for more workers than a small machine's CPU slot has.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(1, min(os.cpu_count() or 1, 8))))


def quantize_gptqmodel(
    source: Path,
    output: Path,
    quant_config,
    samples: list[list[int]],
    probe,
    dtype,
    backend=None,
    trust_remote_code: bool = False,
):
    """Quantize the full-weights model at `source` with GPTQModel and save it to `output`.

    Returns the in-memory quantized model's logits on `probe`, taken before saving.
    """
    gptqmodel_env()
    from gptqmodel import BACKEND, GPTQModel
    from logbar import LogBar

    from swiftkit.quant.verify import logits

    # Keep GPTQModel's per-layer progress bars, drop its INFO tables (config dumps, timing summaries).
    LogBar.shared().setLevel(logging.WARNING)

    model = GPTQModel.load(str(source), quant_config, device="cpu", dtype=dtype, trust_remote_code=trust_remote_code)
    calibration = [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in samples]
    with _logs_outside_cwd():
        model.quantize(calibration, batch_size=1, backend=backend or BACKEND.AUTO, calibration_data_min_length=1)
    reference = logits(_ready_for_inference(model.model), probe)
    # GPTQModel's save() print()s the file list and both config JSONs (hundreds of lines); the
    # summary table says what was written.
    with contextlib.redirect_stdout(io.StringIO()):
        model.save(str(output))
    return reference


@contextlib.contextmanager
def _logs_outside_cwd():
    """GPTQModel 7.6 writes per-layer log files into `./logs` of whatever directory the user is in
    (a module constant, no setting); point it at a temporary directory for the duration."""
    from gptqmodel.looper import loop_processor

    saved = loop_processor._PROJECT_LOG_DIR
    with tempfile.TemporaryDirectory(prefix="swiftkit-gptqmodel-logs-") as tmp:
        loop_processor._PROJECT_LOG_DIR = Path(tmp)
        try:
            yield
        finally:
            loop_processor._PROJECT_LOG_DIR = saved


def _ready_for_inference(model):
    """A copy of the in-memory quantized model that computes what its saved checkpoint will.

    GPTQModel 7.6 leaves packed GPTQ modules with v1 zero points after `quantize()` while its torch
    kernel reads v2 ones (it converts only when loading a checkpoint), so the in-memory forward is
    wrong. The conversion runs on a copy: the model that `save()` writes stays v1.
    """
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear
    from gptqmodel.utils.model import convert_gptq_v1_to_v2_format_module

    stale = [
        m for m in model.modules() if isinstance(m, BaseQuantLinear) and getattr(m, "REQUIRES_FORMAT_V2", False) and m.qzero_format() == 1
    ]
    if not stale:
        return model
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, BaseQuantLinear) and getattr(module, "REQUIRES_FORMAT_V2", False) and module.qzero_format() == 1:
            convert_gptq_v1_to_v2_format_module(module, bits=module.bits, pack_dtype=module.pack_dtype)
    return model


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
    from gptqmodel import QuantizeConfig

    config = QuantizeConfig(bits=bits, group_size=group_size, sym=True, desc_act=False, offload_to_disk=False)
    return quantize_gptqmodel(source, output, config, samples, probe, dtype, trust_remote_code=trust_remote_code)
