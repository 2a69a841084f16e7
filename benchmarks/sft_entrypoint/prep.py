# Builds a random-init Qwen2.5-1.5B dir (bf16) with the toy tokenizer, and SFT data whose token lengths follow
# benchmarks/data/alpaca_en_lengths.json (digits: one token each with the Qwen2 pre-tokenizer).
import json
import os
import random
import shutil
import sys

import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

here = os.path.dirname(os.path.abspath(__file__))
out = sys.argv[1]
data = sys.argv[2]
cfg = Qwen2Config(
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    eos_token_id=2,
    pad_token_id=0,
    bos_token_id=None,
)
torch.manual_seed(0)
with torch.device("cuda"):
    model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
model.save_pretrained(out)
for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    shutil.copy(os.path.join(here, f), out)
tok = AutoTokenizer.from_pretrained(out)
lengths = json.load(open(os.path.join(here, "..", "data", "alpaca_en_lengths.json")))["lengths"]
rng = random.Random(0)
real = []
with open(data, "w") as fh:
    for L in lengths:
        body = max(L - 12, 4)
        u = max(body // 3, 1)
        a = max(body - u, 1)
        msg = [
            {"role": "user", "content": "".join(rng.choice("0123456789") for _ in range(u))},
            {"role": "assistant", "content": "".join(rng.choice("0123456789") for _ in range(a))},
        ]
        real.append(len(tok.apply_chat_template(msg, tokenize=True, return_dict=True)["input_ids"]))
        fh.write(json.dumps({"messages": msg}) + "\n")
print(json.dumps({"rows": len(real), "mean_tokens": sum(real) / len(real), "max_tokens": max(real)}))
