"""A random-init Qwen2.5 model dir (bf16) with the toy tokenizer, and SFT data whose token lengths follow the
Alpaca histogram (digits: one token each with the Qwen2 pre-tokenizer), for running `swiftkit sft` itself.

    python benchmarks/sft_entrypoint/prep.py qwen2.5-1.5b TOKENIZER_DIR MODEL_OUT DATA_OUT.jsonl
"""

import json
import random
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer

from swiftkit.bench.train import alpaca_lengths, random_model

arch, tok_dir, out, data = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(0)
model = random_model(arch, torch.bfloat16, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
# The toy tokenizer's ids (eos 2, pad 0) inside the Qwen vocabulary: generation settings must agree with it.
model.config.eos_token_id, model.config.pad_token_id, model.config.bos_token_id = 2, 0, None
model.generation_config.eos_token_id, model.generation_config.pad_token_id, model.generation_config.bos_token_id = 2, 0, None
model.save_pretrained(out)
for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    shutil.copy(tok_dir / f, out)
tok = AutoTokenizer.from_pretrained(out)
rng = random.Random(0)
real = []
with open(data, "w") as fh:
    for n in alpaca_lengths():
        body = max(n - 12, 4)  # 12 tokens of ChatML framing with the toy template
        u = max(body // 3, 1)
        msg = [
            {"role": "user", "content": "".join(rng.choice("0123456789") for _ in range(u))},
            {"role": "assistant", "content": "".join(rng.choice("0123456789") for _ in range(max(body - u, 1)))},
        ]
        real.append(len(tok.apply_chat_template(msg, tokenize=True, return_dict=True)["input_ids"]))
        fh.write(json.dumps({"messages": msg}) + "\n")
print(json.dumps({"arch": arch, "rows": len(real), "mean_tokens": sum(real) / len(real), "max_tokens": max(real)}))
