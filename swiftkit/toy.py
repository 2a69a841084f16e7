"""`swiftkit toy`: a small Qwen2-architecture model built offline, deterministically, for demos and tests.

A randomly initialised model cannot be taught anything by LoRA (FEASIBILITY.md), so the toy is
pre-trained briefly (full parameters) on synthetic comparison text ("the larger of 37 and 45 is 45").
Comparison was chosen over addition because it is learnable in this budget: measured on an H100 with
this architecture (docs/benchmarks.md), held-out accuracy reached 98 % after 400 steps for
comparison but only 11 % after 1,000 steps for two-digit addition.

The toy never sees the chat format: the base scores near zero on chat-formatted questions, and SFT
has to teach the format while reusing the skill. One tenth of all operand pairs are held out of
pre-training *and* of the task data given to SFT/DPO, so evaluation on them measures
generalisation, not recall.

The artifact carries the task data in `task/`: sft.jsonl (chat), dpo.jsonl (preferences) from training
pairs; heldout.jsonl (question/answer) and heldout_pref.jsonl (preferences) from held-out pairs; calib.txt.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from pydantic import Field

from swiftkit.artifacts import Manifest, ServingInfo, artifact_writer, default_output, write_manifest
from swiftkit.config import StageConfig, positional
from swiftkit.console import console, progress, summary

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<think>", "</think>"]
# Qwen2's own pre-tokenizer regex: transformers 5 rebuilds a qwen2 tokenizer with it, so training the
# toy tokenizer with anything else would silently change tokenization after a save/load round trip.
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# ChatML with {% generation %} markers (assistant-only loss) and Qwen2.5-style tool calls.
CHAT_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{ '# Tools\\n\\nYou may call one or more functions. Function signatures within <tools></tools>:\\n<tools>' }}"
    "{%- for tool in tools %}{{ '\\n' + (tool | tojson) }}{%- endfor %}"
    '{{ \'\\n</tools>\\n\\nReturn each call as <tool_call>{"name": <name>, "arguments": <args-json>}</tool_call><|im_end|>\\n\' }}'
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' and tools %}{# already rendered above #}"
    "{%- elif message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}"
    "{{ message['content'] or '' }}"
    "{%- for call in message.get('tool_calls') or [] %}{%- set fn = call['function'] if call['function'] is defined else call %}"
    "{{ '<tool_call>{\"name\": \"' + fn['name'] + '\", \"arguments\": ' + (fn['arguments'] if fn['arguments'] is string else fn['arguments'] | tojson) + '}</tool_call>' }}"  # noqa: E501
    "{%- endfor %}{{ '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- elif message['role'] == 'tool' %}{{ '<|im_start|>tool\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
WORDS = (
    "the a model learns numbers and words from text what is larger smaller max min of and answer question "
    "compare bigger greater result please tell me you I we it this that which"
).split()


class ToyConfig(StageConfig):
    output: str | None = positional(None, description="Artifact directory (default: runs/toy-<time>).")
    pretrain_steps: int = Field(400, description="Full-parameter pre-training steps on synthetic comparison text.")
    hidden_size: int = Field(128, description="Hidden size (multiple of 128 for quantization groups).")
    layers: int = Field(4, description="Transformer layers.")
    vocab_size: int = Field(512, description="BPE vocabulary size.")


def operand_pairs(seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All unordered pairs of two-digit operands, split 90/10 into (train, held-out)."""
    pairs = [(a, b) for a in range(10, 100) for b in range(a, 100)]
    random.Random(seed).shuffle(pairs)
    cut = len(pairs) // 10
    return pairs[cut:], pairs[:cut]


def _orient(pair: tuple[int, int], rng: random.Random) -> tuple[int, int]:
    return pair if rng.random() < 0.5 else (pair[1], pair[0])


PHRASINGS = ("max {a} {b} =", "the larger of {a} and {b} is", "larger of {a} and {b}:")


def pretrain_example(pair: tuple[int, int], rng: random.Random) -> tuple[str, str]:
    """(statement, answer) in one of a few plain phrasings; the answer is what the loss is on."""
    a, b = _orient(pair, rng)
    return rng.choice(PHRASINGS).format(a=a, b=b), f" {max(a, b)}\n"


def pretrain_line(pair: tuple[int, int], rng: random.Random) -> str:
    return "".join(pretrain_example(pair, rng))


def question(a: int, b: int) -> str:
    return f"What is the larger of {a} and {b}?"


def _preference_row(a: int, b: int) -> dict:
    """The preferred answer is the larger number; the rejected one is the classic slip, the smaller."""
    return {
        "prompt": [{"role": "user", "content": question(a, b)}],
        "chosen": [{"role": "assistant", "content": str(max(a, b))}],
        "rejected": [{"role": "assistant", "content": str(min(a, b))}],
    }


def write_task_data(task_dir: Path, train: list[tuple[int, int]], heldout: list[tuple[int, int]], seed: int) -> dict[str, int]:
    """SFT / DPO data and calibration text from train pairs; evaluation data from held-out pairs only."""
    rng = random.Random(seed + 1)
    task_dir.mkdir()
    sft_pairs = rng.sample(train, 2000)
    dpo_pairs = rng.sample([p for p in train if p not in set(sft_pairs)], 600)
    rows = {"sft": 0, "dpo": 0, "heldout": 0}
    with open(task_dir / "sft.jsonl", "w") as fh:
        for pair in sft_pairs:
            a, b = _orient(pair, rng)
            fh.write(
                json.dumps({"messages": [{"role": "user", "content": question(a, b)}, {"role": "assistant", "content": str(max(a, b))}]})
                + "\n"
            )
            rows["sft"] += 1
    with open(task_dir / "dpo.jsonl", "w") as fh:
        for pair in dpo_pairs:
            a, b = _orient(pair, rng)
            if a == b:
                continue
            fh.write(json.dumps(_preference_row(a, b)) + "\n")
            rows["dpo"] += 1
    with open(task_dir / "heldout.jsonl", "w") as fh, open(task_dir / "heldout_pref.jsonl", "w") as pref:
        for pair in heldout:
            a, b = _orient(pair, rng)
            fh.write(json.dumps({"question": question(a, b), "answer": str(max(a, b)), "a": a, "b": b}) + "\n")
            rows["heldout"] += 1
            if a != b:
                pref.write(json.dumps(_preference_row(a, b)) + "\n")
    calib = "".join(pretrain_line(p, rng) for p in rng.sample(train, 400))
    (task_dir / "calib.txt").write_text(calib)
    return rows


def build_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None, model_max_length=1024
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _filler_text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "\n"


def run(cfg: ToyConfig) -> Path:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    output = Path(cfg.output) if cfg.output else default_output("toy")
    started = time.time()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    train_pairs, heldout_pairs = operand_pairs(cfg.seed)

    with artifact_writer(output, overwrite=cfg.overwrite) as tmp:
        tokenizer_corpus = [pretrain_line(p, rng) for p in train_pairs[:2000]] + [_filler_text(rng) for _ in range(2000)]
        tokenizer_corpus += [CHAT_TEMPLATE, "What is the answer? Tell me please."]
        tokenizer = build_tokenizer(tokenizer_corpus, cfg.vocab_size)
        heads = cfg.hidden_size // 64  # head_dim 64: vLLM's CPU attention needs >= 64
        config = Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=3 * cfg.hidden_size,
            num_hidden_layers=cfg.layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            rope_theta=10000.0,
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
        )
        model = Qwen2ForCausalLM(config)
        loss = _pretrain(model, tokenizer, train_pairs, cfg, rng)

        model.generation_config = GenerationConfig(
            eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id, do_sample=False
        )
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        rows = write_task_data(tmp / "task", train_pairs, heldout_pairs, cfg.seed)
        manifest = Manifest(
            kind="model",
            stage="toy",
            config=cfg.model_dump(),
            metrics={"pretrain_loss": round(loss, 4), "parameters": sum(p.numel() for p in model.parameters()), "task_rows": rows},
            serving=ServingInfo(
                chat_template=CHAT_TEMPLATE,
                eos_token="<|im_end|>",
                eos_token_ids=list(model.generation_config.eos_token_id),
                pad_token="<|endoftext|>",
                stop=[],
            ),
        )
        write_manifest(tmp, manifest)
    summary(
        "toy model",
        [
            ("architecture", f"Qwen2, {cfg.layers} layers, hidden {cfg.hidden_size}, vocab {len(tokenizer)}"),
            ("parameters", f"{manifest.metrics['parameters']:,}"),
            ("pre-train loss", loss),
            ("held-out pairs", rows["heldout"]),
            ("time", f"{time.time() - started:.0f}s"),
        ],
        artifact=str(output.resolve()),
    )
    return output.resolve()


def _pretrain(model, tokenizer, train_pairs, cfg: ToyConfig, rng: random.Random) -> float:
    """Full-parameter training on packed synthetic statements (a plain loop: faster than Trainer here)."""
    import torch

    seq_len, batch = 128, 32
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=cfg.pretrain_steps, pct_start=0.05)
    eos = tokenizer.pad_token_id
    model.train()
    ema = None
    with progress() as bar:
        task = bar.add_task("pre-training toy", total=cfg.pretrain_steps, info="")
        for _step in range(cfg.pretrain_steps):
            # Loss only on the answers: operands are random, so predicting them teaches nothing.
            ids: list[int] = []
            labels: list[int] = []
            while len(ids) < seq_len * batch:
                statement, answer = pretrain_example(rng.choice(train_pairs), rng)
                s_ids = tokenizer(statement, add_special_tokens=False)["input_ids"]
                a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [eos]
                ids += s_ids + a_ids
                labels += [-100] * len(s_ids) + a_ids
            x = torch.tensor(ids[: seq_len * batch]).view(batch, seq_len)
            y = torch.tensor(labels[: seq_len * batch]).view(batch, seq_len)
            out = model(input_ids=x, labels=y)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            ema = out.loss.item() if ema is None else 0.9 * ema + 0.1 * out.loss.item()
            bar.update(task, advance=1, info=f"loss {ema:.3f}")
    model.eval()
    console.log(f"pre-training done, loss {ema:.3f}")
    return float(ema)
