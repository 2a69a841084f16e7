"""GPU fine-tuning throughput: padded batches vs padding-free packing with isolated attention, with and
without a chunked (fused) LM-head loss, on random-init Qwen2.5 architectures.

Runs on the lent GPU machine, which has torch/transformers/peft but no trl or datasets: a plain PyTorch
training loop (PEFT LoRA r16 on all linear layers, gradient checkpointing, bf16, AdamW), random token ids
with lengths drawn from the Alpaca length distribution (benchmarks/data/alpaca_en_lengths.json, made with
--make-lengths). Throughput counts real (non-padding) tokens. The chunked losses come from trl's
ChunkedLogProbFunction (the kernel TRL 1.16's SFTTrainer uses, so swiftkit sft's path) and liger-kernel's
fused linear cross-entropy, each imported from a carried wheel when present.

    python benchmarks/sft_gpu.py --models qwen2.5-1.5b,qwen2.5-7b --out $OUT
    python benchmarks/sft_gpu.py --models tiny --steps 2 --warmup 1 --out /tmp/sftgpu   # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

LENGTHS = Path(__file__).parent / "data" / "alpaca_en_lengths.json"
# From the published config.json of Qwen/Qwen2.5-1.5B-Instruct and Qwen/Qwen2.5-7B-Instruct.
MODELS = {
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=2048, tie_word_embeddings=True),
}
COMMON = dict(max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6, hidden_act="silu")
# Chars per token for English Alpaca text and the ChatML framing with Qwen2.5's default system prompt.
CHARS_PER_TOKEN = 4.0
TEMPLATE_TOKENS = 30


@dataclass
class Case:
    name: str
    layout: str  # "padded" (rows, right-padded to the longest) or "packed" (one padding-free row)
    size: int  # rows per step (padded) or tokens per step (packed)
    attn: str = "sdpa"
    loss: str = "hf"  # hf: model(labels=...) with full logits; trl / liger: chunked fused LM head + CE
    qlora: bool = False
    liger_layers: bool = False  # liger's RMSNorm / SwiGLU / RoPE kernels patched into the model (kept after)
    objective: str = "sft"  # or "dpo": chosen/rejected pairs, policy + frozen reference (adapter off) forward
    result: dict = field(default_factory=dict)


def cases(model: str) -> list[Case]:
    big = model == "qwen2.5-7b"
    flex, trl, liger = "flex_attention", "trl", "liger"
    out = [Case(f"padded x{b}", "padded", b) for b in ((4, 16, 32) if big else (8, 32))]
    for size in (4096, 8192):
        out += [
            Case(f"packed {size} sdpa", "packed", size, "sdpa", "hf"),
            Case(f"packed {size} sdpa + trl chunked CE", "packed", size, "sdpa", trl),
            Case(f"packed {size} flex", "packed", size, flex, "hf"),
            Case(f"packed {size} flex + trl chunked CE", "packed", size, flex, trl),
            Case(f"packed {size} flex + liger FLCE", "packed", size, flex, liger),
        ]
    if not big:  # launch-bound at 4096 tokens: does a larger step still pay?
        out += [Case(f"packed 16384 {a} + trl chunked CE", "packed", 16384, attn, trl)
                for a, attn in (("sdpa", "sdpa"), ("flex", flex))]
        out += [
            Case("DPO padded x8 pairs", "padded", 8, objective="dpo"),
            Case("DPO packed 8192 sdpa + trl chunked logprobs", "packed", 8192, "sdpa", trl, objective="dpo"),
        ]
    out += [Case("packed 8192 flex + liger FLCE + liger layers", "packed", 8192, flex, liger, liger_layers=True)]
    if big:  # last: it replaces the bf16 base by a 4-bit one
        out += [Case(f"QLoRA packed {size} {a} + trl chunked CE", "packed", size, attn, trl, qlora=True)
                for size, a, attn in ((4096, "sdpa", "sdpa"), (8192, "sdpa", "sdpa"), (8192, "flex", flex))]
    if model == "tiny":  # CPU smoke run: flex attention has no CPU backward
        out = [c for c in out if (c.size in (8, 4096) or c.objective == "dpo") and c.attn == "sdpa"]
        for c in out:
            c.size = 256 if c.layout == "packed" else c.size
    return out


# ---------------------------------------------------------------------------------------------- data

def make_lengths(src: Path) -> None:
    """Token lengths of the Alpaca rows as ChatML conversations (no Qwen tokenizer offline: chars / 4 + 30)."""
    lengths = []
    for line in src.read_text().splitlines():
        row = json.loads(line)
        chars = len(row["instruction"]) + len(row["input"]) + len(row["output"])
        lengths.append(math.ceil(chars / CHARS_PER_TOKEN) + TEMPLATE_TOKENS)
    LENGTHS.parent.mkdir(exist_ok=True)
    LENGTHS.write_text(json.dumps({
        "source": "../shared/data/alpaca_en/alpaca_en_rows0-3251.jsonl (instruction + input + output)",
        "approximation": f"tokens = ceil(chars / {CHARS_PER_TOKEN}) + {TEMPLATE_TOKENS} (ChatML + Qwen2.5 default system prompt)",
        "mean": round(sum(lengths) / len(lengths), 1), "max": max(lengths), "lengths": lengths,
    }, separators=(",", ":")))
    print(f"{len(lengths)} rows, mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)} -> {LENGTHS}")


class Batches:
    """Random token ids with Alpaca lengths: padded row batches, or greedily filled padding-free rows."""

    def __init__(self, lengths: list[int], vocab: int, pad_id: int, seed: int, device: torch.device):
        self.lengths, self.vocab, self.pad_id, self.device = lengths, vocab, pad_id, device
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.pending: list[int] = []

    def _next_length(self) -> int:
        return self.pending.pop() if self.pending else self.rng.choice(self.lengths)

    def padded(self, rows: int) -> tuple[dict, int, torch.Tensor, int]:
        """Right-padded rows; also each token's row (sequence) index and the number of sequences."""
        lens = [self._next_length() for _ in range(rows)]
        width = max(lens)
        ids = torch.full((rows, width), self.pad_id)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for i, n in enumerate(lens):
            ids[i, :n] = torch.randint(self.vocab, (n,), generator=self.gen)
            mask[i, :n] = 1
        labels = ids.masked_fill(mask == 0, -100)
        seg = torch.arange(rows)[:, None].expand(rows, width)
        return self._to({"input_ids": ids, "attention_mask": mask, "labels": labels}), sum(lens), seg.to(self.device), rows

    def packed(self, budget: int, pairs: bool = False) -> tuple[dict, int, torch.Tensor, int]:
        """One row of `budget` tokens: whole sequences, positions restarting at 0 (what TRL's padding-free
        collator emits), the tail padded to the fixed budget so compiled kernels see one shape."""
        lens: list[int] = []
        while True:
            n = self._next_length()
            if n > budget:  # only in tiny smoke runs: the budget is shorter than some conversations
                continue
            if sum(lens) + n > budget:
                self.pending.append(n)
                break
            lens.append(n)
        if pairs and len(lens) % 2:  # DPO: whole chosen/rejected pairs only
            self.pending.append(lens.pop())
        real = sum(lens)
        ids = torch.cat([torch.randint(self.vocab, (real,), generator=self.gen), torch.full((budget - real,), self.pad_id)])
        pos = torch.cat([torch.arange(n) for n in lens] + [torch.zeros(budget - real, dtype=torch.long)])
        labels = ids.clone()
        labels[real:] = -100
        labels[pos == 0] = -100  # a sequence's first token is not predicted from the previous sequence
        seg = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)] + [torch.zeros(budget - real, dtype=torch.long)])
        batch = {"input_ids": ids[None], "position_ids": pos[None], "labels": labels[None]}
        return self._to(batch), real, seg[None].to(self.device), len(lens)

    def _to(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}


# --------------------------------------------------------------------------------------------- model

def build_model(name: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**MODELS[name], **COMMON, attn_implementation="sdpa")
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.config.use_cache = False
    return model


def add_lora(model):
    from peft import LoraConfig, get_peft_model

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def quantize_4bit(model, dtype: torch.dtype) -> None:
    """QLoRA's base: every decoder linear layer as bitsandbytes NF4 with double quantization (lm_head and
    embeddings stay bf16, as transformers' BitsAndBytesConfig leaves them)."""
    import bitsandbytes as bnb

    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for child, lin in list(parent.named_children()):
                if not isinstance(lin, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                      compute_dtype=dtype, compress_statistics=True, quant_type="nf4", device="meta")
                q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, quant_type="nf4",
                                             compress_statistics=True).to(lin.weight.device)
                if lin.bias is not None:
                    q.bias = torch.nn.Parameter(lin.bias.data, requires_grad=False)
                setattr(parent, child, q)
                del lin
    gc.collect()
    torch.cuda.empty_cache()


def set_attention(peft_model, impl: str) -> None:
    peft_model.get_base_model().set_attn_implementation(impl)


def _trl_chunked_logprob():
    """trl's ChunkedLogProbFunction. Its backward imports trl.trainer.utils for a DeepSpeed ZeRO-3 gather,
    and that module imports `datasets`, which the GPU machine lacks: without ZeRO-3 the gather is a no-op
    context, so stand in a module that says exactly that."""
    import contextlib
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("datasets") is None and "trl.trainer.utils" not in sys.modules:
        import trl.trainer

        stub = types.ModuleType("trl.trainer.utils")
        stub.maybe_gather_lm_head_ctx = lambda *params: contextlib.nullcontext()
        sys.modules["trl.trainer.utils"] = stub
        trl.trainer.utils = stub
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    return ChunkedLogProbFunction


def _hidden(peft_model, batch: dict, mask: torch.Tensor) -> torch.Tensor:
    causal = peft_model.get_base_model()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return causal.model(**inputs).last_hidden_state[:, :-1][mask]


def token_logprobs(peft_model, batch: dict, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every labelled next token (and the label mask): full logits ("hf") or trl's kernel."""
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    if kind == "hf":
        logits = peft_model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1][mask]
        return torch.log_softmax(logits.float(), -1).gather(-1, labels[mask][:, None])[:, 0], mask
    weight = peft_model.get_base_model().lm_head.weight
    # The vocabulary tile width TRL's fused LM head uses (trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE).
    lp = _trl_chunked_logprob().apply(_hidden(peft_model, batch, mask), weight, None, labels[mask], 1.0, 32768, None, 1.0, ())
    return lp[0], mask


def sft_loss(peft_model, batch: dict, kind: str) -> torch.Tensor:
    if kind == "hf":
        return peft_model(**batch).loss
    if kind == "trl":
        return -token_logprobs(peft_model, batch, kind)[0].mean()
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    labels = batch["labels"][:, 1:]
    mask = labels != -100
    weight = peft_model.get_base_model().lm_head.weight
    return LigerFusedLinearCrossEntropyLoss()(weight, _hidden(peft_model, batch, mask), labels[mask])


def dpo_loss(peft_model, batch: dict, seg: torch.Tensor, nseq: int, kind: str, beta: float = 0.1) -> torch.Tensor:
    """Sigmoid DPO on pairs (sequence 2i chosen, 2i+1 rejected); the reference is the model with the
    adapter disabled, as TRL's DPOTrainer does for PEFT models."""

    def seq_logps() -> torch.Tensor:
        lp, mask = token_logprobs(peft_model, batch, kind)
        return lp.new_zeros(nseq).index_add(0, seg[:, 1:][mask], lp)

    policy = seq_logps()
    with torch.no_grad(), peft_model.disable_adapter():
        ref = seq_logps()
    margin = (policy[0::2] - ref[0::2]) - (policy[1::2] - ref[1::2])
    return -torch.nn.functional.logsigmoid(beta * margin).mean()


# ------------------------------------------------------------------------------------------- measure

def measure(peft_model, case: Case, batches: Batches, steps: int, warmup: int, min_s: float) -> dict:
    device = batches.device
    set_attention(peft_model, case.attn)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    dpo = case.objective == "dpo"
    if case.layout == "padded":
        def make():
            return batches.padded(2 * case.size if dpo else case.size)
    else:
        def make():
            return batches.packed(case.size, pairs=dpo)

    def step(batch: dict, seg: torch.Tensor, nseq: int) -> torch.Tensor:
        loss = dpo_loss(peft_model, batch, seg, nseq, case.loss) if dpo else sft_loss(peft_model, batch, case.loss)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    begun = time.perf_counter()
    for _ in range(warmup):
        batch, _, seg, nseq = make()
        step(batch, seg, nseq)
    sync()
    started = time.perf_counter()
    losses, real, slots = [], 0, 0
    # At least `steps` timed steps and `min_s` seconds, at most 4x `steps`.
    while len(losses) < steps or (time.perf_counter() - started < min_s and len(losses) < 4 * steps):
        batch, n, seg, nseq = make()
        losses.append(step(batch, seg, nseq))
        real += n
        slots += batch["input_ids"].numel()
    sync()
    elapsed = time.perf_counter() - started
    return {
        "tok_s": real / elapsed,
        "step_s": elapsed / len(losses),
        "steps": len(losses),
        "real_tokens_per_step": real / len(losses),
        "padding": 1 - real / slots,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "loss": float(torch.stack(losses).float().mean()),
        "warmup_s": started - begun,  # includes compiling (flex attention, Triton kernels)
    }


@torch.no_grad()
def isolation_check(peft_model, batches: Batches, impl: str) -> dict:
    """Per-sequence mean NLL of 8 sequences packed in one row vs each run alone (sdpa, no mask). The
    control packs the same row with positions NOT restarting (one long sequence): it must differ."""
    set_attention(peft_model, impl)
    peft_model.eval()
    lens = [batches.rng.choice(batches.lengths) for _ in range(8)]
    seqs = [torch.randint(batches.vocab, (n,), generator=batches.gen).to(batches.device) for n in lens]
    width = 128 * math.ceil(sum(lens) / 128)
    ids = torch.cat([*seqs, torch.full((width - sum(lens),), batches.pad_id, device=batches.device)])[None]

    def per_seq(logits: torch.Tensor, offset: int, n: int, seq: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(logits[offset:offset + n - 1].float(), seq[1:]))

    def packed_losses(pos: torch.Tensor) -> list[float]:
        logits = peft_model(input_ids=ids, position_ids=pos[None]).logits[0]
        offsets = [sum(lens[:i]) for i in range(len(lens))]
        return [per_seq(logits, o, n, s) for o, n, s in zip(offsets, lens, seqs, strict=True)]

    restart = torch.cat([torch.arange(n) for n in lens] + [torch.zeros(width - sum(lens), dtype=torch.long)])
    packed = packed_losses(restart.to(batches.device))
    control = packed_losses(torch.arange(width, device=batches.device))
    set_attention(peft_model, "sdpa")
    alone = [per_seq(peft_model(input_ids=s[None]).logits[0], 0, len(s), s) for s in seqs]
    peft_model.train()
    return {
        "attn": impl,
        "max_abs_diff_isolated": max(abs(a - b) for a, b in zip(packed, alone, strict=True)),
        "max_abs_diff_not_isolated_control": max(abs(a - b) for a, b in zip(control, alone, strict=True)),
        "per_seq_loss_alone": alone,
    }


def versions() -> dict:
    out = {}
    for pkg in ("torch", "transformers", "peft", "triton", "trl", "liger-kernel", "bitsandbytes"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def available(case: Case, have: dict) -> str | None:
    if case.loss == "trl" and not have["trl"]:
        return "trl not installed"
    if (case.loss == "liger" or case.liger_layers) and not have["liger-kernel"]:
        return "liger-kernel not installed"
    if case.qlora and (not have["bitsandbytes"] or not torch.cuda.is_available()):
        return "bitsandbytes/CUDA not available"
    return None


def run_model(name: str, args, have: dict, deadline: float, report: dict, write) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lengths = json.loads(LENGTHS.read_text())["lengths"]
    t0 = time.perf_counter()
    model = build_model(name, device, dtype)
    peft_model = add_lora(model)
    entry = report["models"].setdefault(name, {"build_s": time.perf_counter() - t0, "cases": [], "checks": []})
    batches = Batches(lengths, MODELS[name]["vocab_size"], 0, args.seed, device)
    for impl in () if args.skip_checks else ("sdpa", "flex_attention"):
        try:
            entry["checks"].append(isolation_check(peft_model, batches, impl))
        except Exception as exc:  # report and go on: the throughput table is still worth having
            entry["checks"].append({"attn": impl, "error": f"{type(exc).__name__}: {exc}"[:300]})
        write()
    quantized = False
    for case in cases(name):
        if args.only and not any(word in case.name for word in args.only.split(",")):
            continue
        skip = available(case, have)
        if skip is None and time.perf_counter() > deadline:
            skip = "time budget spent"
        if skip is None and case.liger_layers:
            from liger_kernel.transformers import apply_liger_kernel_to_qwen2

            apply_liger_kernel_to_qwen2(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                        fused_linear_cross_entropy=False, model=peft_model.get_base_model())
        if skip is None and case.qlora and not quantized:
            peft_model = add_lora(_requantized(peft_model, dtype))
            quantized = True
        if skip is not None:
            case.result = {"skipped": skip}
        else:
            try:
                case.result = measure(peft_model, case, batches, args.steps, args.warmup, args.min_s)
            except torch.OutOfMemoryError:
                case.result = {"skipped": "out of memory"}
            except Exception as exc:
                case.result = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        entry["cases"].append(asdict(case))
        print(f"{name:13s} {case.name:42s} {_fmt(case.result)}", flush=True)
        write()
    del peft_model, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _requantized(peft_model, dtype):
    base = peft_model.unload()  # drop the LoRA layers, keep the bf16 base
    quantize_4bit(base, dtype)
    return base


def _fmt(r: dict) -> str:
    if "tok_s" not in r:
        return r.get("skipped") or r.get("error", "")
    peak = f"{r['peak_gib']:.1f} GiB" if r["peak_gib"] is not None else "-"
    return f"{r['tok_s']:>9,.0f} tok/s  {peak:>9s}  pad {r['padding']:.0%}  loss {r['loss']:.3f}"


def markdown(report: dict) -> str:
    lines = [f"device: {report['device']}; {', '.join(f'{k} {v}' for k, v in report['versions'].items() if v)}", ""]
    for name, entry in report["models"].items():
        # The baseline: the padded SFT batch of 32 rows, else the largest padded SFT batch measured.
        padded = [c for c in entry["cases"] if c["layout"] == "padded" and c.get("objective", "sft") == "sft"
                  and "tok_s" in c["result"]]
        padded.sort(key=lambda c: c["size"])
        base_name, base = (padded[-1]["name"], padded[-1]["result"]) if padded else ("-", None)
        lines += [f"### {name}", "", f"| path | real tok/s | x {base_name} | peak GiB | % of {base_name} peak | padding | step s |",
                  "|---|---|---|---|---|---|---|"]
        for c in entry["cases"]:
            r = c["result"]
            if "tok_s" not in r:
                lines.append(f"| {c['name']} | {r.get('skipped') or r.get('error')} | | | | | |")
                continue
            ratio = f"{r['tok_s'] / base['tok_s']:.2f}" if base else "-"
            mem = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
            mem_ratio = f"{r['peak_gib'] / base['peak_gib']:.0%}" if base and r["peak_gib"] else "-"
            lines.append(f"| {c['name']} | {r['tok_s']:,.0f} | {ratio} | {mem} | {mem_ratio} | {r['padding']:.0%} | {r['step_s']:.3f} |")
        for chk in entry["checks"]:
            if "error" in chk:
                lines.append(f"\nisolation check ({chk['attn']}): {chk['error']}")
            else:
                lines.append(f"\nisolation check ({chk['attn']}): max |packed - alone| per-sequence loss "
                             f"{chk['max_abs_diff_isolated']:.2e}; not-isolated control {chk['max_abs_diff_not_isolated_control']:.2e}")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="qwen2.5-1.5b,qwen2.5-7b")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per case (at least)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--min-s", type=float, default=3.0, help="keep timing a case at least this long")
    parser.add_argument("--budget-s", default="200,280", help="per model (comma list): skip its remaining cases after this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma list: run only the cases whose name contains one of these")
    parser.add_argument("--skip-checks", action="store_true", help="skip the attention isolation checks")
    parser.add_argument("--out", type=Path, default=Path("runs/sft_gpu"))
    parser.add_argument("--make-lengths", type=Path, help="write the length file from this Alpaca jsonl and exit")
    args = parser.parse_args()
    if args.make_lengths:
        make_lengths(args.make_lengths)
        return
    have = versions()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    report = {"device": device, "versions": have, "args": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    args.out.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        (args.out / "sft_gpu.json").write_text(json.dumps(report, indent=1))
        (args.out / "sft_gpu.md").write_text(markdown(report))

    names = args.models.split(",")
    budgets = [float(b) for b in args.budget_s.split(",")]
    for name, budget in zip(names, budgets + budgets[-1:] * len(names), strict=False):
        run_model(name, args, have, time.perf_counter() + budget, report, write)
    print(markdown(report))


if __name__ == "__main__":
    main()
