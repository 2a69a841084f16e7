# Which synthetic task can the toy architecture learn in a CPU-minute budget? Run on a GPU for speed:
#   mkdir -p .device/exp && cp <toy>/{config.json,tokenizer.json,tokenizer_config.json} .device/exp/
#   cp benchmarks/toy_task_learnability.py .device/exp/tasks.py && python .device/exp/tasks.py
# Prints held-out greedy accuracy every 100 steps per (task, lr, batch). Results: docs/benchmarks.md.
import json
import os
import random
import time

import torch
from transformers import AutoConfig, AutoTokenizer, Qwen2ForCausalLM

D = os.path.dirname(os.path.abspath(__file__))
dev = "cuda"
tok = AutoTokenizer.from_pretrained(D)
cfg = AutoConfig.from_pretrained(D)


def make(task, rng, train_items):
    if task == "add2":
        a, b = rng.choice(train_items)
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        return f"{a} + {b} =", f" {a + b}"
    if task == "addd":
        a = rng.choice(train_items)
        d = rng.randint(1, 9)
        return f"{a} + {d} =", f" {a + d}"
    if task == "rev":
        a = rng.choice(train_items)
        return f"reverse {a} =", " " + str(a)[::-1]
    if task == "max2":
        a, b = rng.choice(train_items)
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        return f"max {a} {b} =", f" {max(a, b)}"


def items(task):
    rng = random.Random(0)
    if task in ("add2", "max2"):
        x = [(a, b) for a in range(10, 100) for b in range(a, 100)]
    elif task == "addd":
        x = list(range(100, 1000))
    else:
        x = list(range(1000, 10000))
    rng.shuffle(x)
    cut = len(x) // 10 if task != "addd" else 225
    return x[cut:], x[:cut]


def run(task, steps, lr, batch, mask):
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(cfg).to(dev)
    tr, held = items(task)
    rng = random.Random(1)
    hrng = random.Random(2)
    hq = [make(task, hrng, held) for _ in range(300)]
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    res = []
    for s in range(steps):
        ids, lab = [], []
        while len(ids) < 128 * batch:
            p, c = make(task, rng, tr)
            pi = tok(p, add_special_tokens=False)["input_ids"]
            ci = tok(c + "\n", add_special_tokens=False)["input_ids"] + [tok.pad_token_id]
            ids += pi + ci
            lab += ([-100] * len(pi) if mask else pi) + ci
        x = torch.tensor(ids[: 128 * batch], device=dev).view(batch, 128)
        y = torch.tensor(lab[: 128 * batch], device=dev).view(batch, 128)
        loss = m(input_ids=x, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        sch.step()
        opt.zero_grad()
        if (s + 1) % 100 == 0 or s + 1 == steps:
            m.eval()
            tok.padding_side = "left"
            enc = tok([p for p, _ in hq], return_tensors="pt", padding=True).to(dev)
            with torch.no_grad():
                out = m.generate(**enc, max_new_tokens=7, do_sample=False, pad_token_id=tok.pad_token_id)
            t = tok.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
            acc = sum(a.strip().split("\n")[0] == c.strip() for a, (_, c) in zip(t, hq, strict=True)) / len(hq)
            m.train()
            res.append((s + 1, round(loss.item(), 3), acc))
    return res


out = {}
for task, steps, lr, batch, mask in [
    ("add2", 1000, 3e-3, 32, 1),
    ("addd", 600, 3e-3, 32, 1),
    ("rev", 600, 3e-3, 32, 1),
    ("max2", 600, 3e-3, 32, 1),
    ("add2", 1000, 1e-2, 16, 1),
    ("addd", 600, 1e-2, 16, 1),
]:
    t0 = time.time()
    r = run(task, steps, lr, batch, mask)
    key = f"{task} lr={lr} bs={batch} mask={mask}"
    out[key] = r
    print(key, round(time.time() - t0), r, flush=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "/tmp"), "tasks.json"), "w"), indent=1)
