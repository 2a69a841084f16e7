"""bitsandbytes NF4 / int8: quantized on load by transformers, saved in its serialized bnb layout.

No calibration: bitsandbytes rounds each block of weights on its own.
"""

from __future__ import annotations

import copy
from pathlib import Path


def quantize(
    source: Path,
    output: Path,
    method: str,
    probe,
    dtype,
    double_quant: bool = False,
    trust_remote_code: bool = False,
):
    """Quantize on load and save; return the in-memory quantized model's logits on `probe`."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from swiftkit.quant.verify import logits

    if method == "bnb-nf4":
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_use_double_quant=double_quant,
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(
        source, quantization_config=config, dtype=dtype, device_map="cpu", trust_remote_code=trust_remote_code
    )
    model.eval()
    # On a copy: with bitsandbytes 0.50 on CPU, a forward pass before `save_pretrained` changes what
    # the 4-bit serialization writes (the reloaded model then differs). The saved model never ran.
    reference = logits(copy.deepcopy(model), probe)
    model.save_pretrained(output)
    return reference
