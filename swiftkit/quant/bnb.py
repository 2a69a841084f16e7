"""bitsandbytes NF4 / int8: quantized on load by transformers, saved in its serialized bnb layout.

No calibration: bitsandbytes rounds each block of weights on its own.
"""

from __future__ import annotations

from pathlib import Path


def quantize(
    source: Path,
    output: Path,
    method: str,
    probe,
    dtype,
    double_quant: bool = True,
    trust_remote_code: bool = False,
):
    """Quantize on load, take the in-memory logits on `probe`, then save (which may alter the weights)."""
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
    # Before saving: on CPU, bitsandbytes 0.50's 4-bit serialization rewrites the in-memory weights too.
    reference = logits(model, probe)
    model.save_pretrained(output)
    return reference
