"""`swiftkit bench train`: the plain padded PEFT path vs `swiftkit sft`'s path, side by side, on one model.

Both paths train the same LoRA (r 16, alpha 32, all linear layers, gradient checkpointing, AdamW) on random
token ids whose lengths follow real chat data: the committed Alpaca histogram (alpaca_en_lengths.json
beside this file; no Qwen tokenizer offline, so tokens = ceil(chars / 4) + 30 for the ChatML framing) or
--data tokenized with the model's tokenizer. Random ids cost the GPU exactly what real text costs.

- **padded xN**: N conversations right-padded to the longest, attention mask, sdpa, the model's own loss
  on the full (tokens x vocabulary) logits: what a plain transformers + PEFT loop does.
- **swiftkit**: what `swiftkit sft` runs by default on CUDA, built from the same pieces: TRL's best-fit-
  decreasing packing into --batch-size bins of --max-length tokens, TRL's padding-free collator (one row,
  positions restarting per conversation, isolated attention), the attention/padding settings of
  swiftkit.train.packing (FlexAttention and one fixed step shape on CUDA), and TRL's chunked fused LM head
  for the loss. Only the Trainer's own loop is left out, so the numbers are the kernels' speed; the
  manifest of a real `swiftkit sft` run reports the same steady-state metric (swiftkit.train.callbacks).

Throughput counts real (non-padding) tokens; peak memory is torch.cuda.max_memory_allocated (CUDA only).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from swiftkit.bench.train_config import BenchTrainConfig
from swiftkit.console import console, out
from swiftkit.errors import SwiftkitError

LENGTHS = Path(__file__).with_name("alpaca_en_lengths.json")
# Random-init architectures, from the published config.json of Qwen/Qwen2.5-1.5B-Instruct and
# Qwen/Qwen2.5-7B-Instruct; "toy" is a tiny one for CPU runs and tests.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    "toy": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=2048, tie_word_embeddings=True),
}
COMMON = dict(max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6, hidden_act="silu")


def random_model(name: str, dtype: torch.dtype, device: torch.device):
    """A random-init Qwen2 model of one of ARCHITECTURES (weights made directly on `device`)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**ARCHITECTURES[name], **COMMON, pad_token_id=0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def alpaca_lengths() -> list[int]:
    return json.loads(LENGTHS.read_text())["lengths"]


def data_lengths(specs: list[str], tokenizer_ref: str, max_length: int, seed: int) -> list[int]:
    """Token lengths of --data rendered with the tokenizer's chat template (rows over max_length skipped)."""
    from swiftkit.data.dataset import drop_overlength, load_training_data
    from swiftkit.loading import load_tokenizer
    from swiftkit.resolve import resolve_model_ref

    tokenizer = load_tokenizer(resolve_model_ref(tokenizer_ref))
    if not tokenizer.chat_template:
        raise SwiftkitError(f"{tokenizer_ref} has no chat template", "pass --tokenizer with a chat model's tokenizer")
    data = drop_overlength(load_training_data(specs, "sft", seed=seed), tokenizer, max_length, "sft")
    return [len(tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in data.rows]


@dataclass
class Result:
    path: str
    tokens_per_step: float
    padding: float
    tok_s: float
    step_s: float
    steps: int
    peak_gib: float | None
    loss: float
    warmup_s: float
    notes: dict[str, Any] = field(default_factory=dict)


class Batches:
    """Random token ids with the given lengths: padded row batches, or swiftkit sft's packed steps."""

    def __init__(self, lengths: list[int], vocab: int, pad_id: int, seed: int, device: torch.device):
        self.lengths, self.vocab, self.pad_id, self.device = lengths, vocab, pad_id, device
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.packed_rows: list[dict[str, Any]] = []

    def _ids(self, n: int) -> list[int]:
        # Never the pad id, which marks padding in the packed step's tail.
        ids = torch.randint(self.vocab - 1, (n,), generator=self.gen)
        return (ids + (ids >= self.pad_id).long()).tolist()

    def padded(self, rows: int) -> tuple[dict[str, torch.Tensor], int]:
        lens = [self.rng.choice(self.lengths) for _ in range(rows)]
        width = max(lens)
        ids = torch.full((rows, width), self.pad_id)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for i, n in enumerate(lens):
            ids[i, :n] = torch.tensor(self._ids(n))
            mask[i, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
        return self._to(batch), sum(lens)

    def packed(self, args: dict[str, Any], bins: int, bin_tokens: int) -> tuple[dict[str, torch.Tensor], int]:
        """`bins` packed rows (TRL pack_dataset, strategy from `args`) through TRL's padding-free collator:
        the batch SFTTrainer hands the model when swiftkit sft packs (`args` = swiftkit.train.packing.sft_args)."""
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        while len(self.packed_rows) < bins:
            self._pack_more(args["packing_strategy"], bin_tokens)
        rows, self.packed_rows = self.packed_rows[:bins], self.packed_rows[bins:]
        collate = DataCollatorForLanguageModeling(
            pad_token_id=self.pad_id, padding_free=True, pad_to_multiple_of=args.get("pad_to_multiple_of")
        )
        batch = collate(rows)
        return self._to(batch), sum(len(r["input_ids"]) for r in rows)

    def _pack_more(self, strategy: str, bin_tokens: int) -> None:
        from datasets import Dataset
        from trl import pack_dataset

        # A pool of ~200 bins' worth of conversations per packing call: BFD fills bins from a sorted pool.
        pool = [self._ids(min(self.rng.choice(self.lengths), bin_tokens)) for _ in range(max(64, 200 * bin_tokens // 110))]
        packed = pack_dataset(Dataset.from_dict({"input_ids": pool}), bin_tokens, strategy=strategy).to_list()
        self.rng.shuffle(packed)  # the Trainer's sampler shuffles packed rows too
        self.packed_rows += packed

    def _to(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _peft(model, r: int):
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    model.config.use_cache = False
    # TRL's SFTTrainer adds its fused LM head before wrapping with PEFT; without fused_lm_head=True the
    # forward is the original one, so the padded path runs the plain model.
    add_fused_lm_head(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    lora = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def measure(model, name: str, make, fused: bool, cfg: BenchTrainConfig, device: torch.device) -> Result:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    cuda = device.type == "cuda"

    def step(batch: dict) -> torch.Tensor:
        loss = model(**batch, use_cache=False, fused_lm_head=True).loss if fused else model(**batch, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    begun = time.perf_counter()
    for _ in range(cfg.warmup):
        step(make()[0])
    sync()
    started = time.perf_counter()
    losses, real, slots = [], 0, 0
    while len(losses) < cfg.steps or (time.perf_counter() - started < cfg.min_seconds and len(losses) < 4 * cfg.steps):
        batch, n = make()
        losses.append(step(batch))
        real += n
        slots += batch["input_ids"].numel()
    sync()
    elapsed = time.perf_counter() - started
    return Result(
        path=name,
        tokens_per_step=real / len(losses),
        padding=1 - real / slots,
        tok_s=real / elapsed,
        step_s=elapsed / len(losses),
        steps=len(losses),
        peak_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        loss=float(torch.stack(losses).float().mean()),
        warmup_s=started - begun,
    )


def _model_and_lengths(cfg: BenchTrainConfig, dtype: torch.dtype, device: torch.device):
    """The model (random-init architecture, or a model reference's weights), its vocab/pad id, and lengths."""
    name = cfg.model_config_name
    if name in ARCHITECTURES:
        model, source = random_model(name, dtype, device), f"random-init {name}"
    else:
        from swiftkit.loading import load_model

        model, _, mref = load_model(name, dtype=str(dtype).removeprefix("torch."), device=device.type)
        source = str(mref.path)
    if cfg.data:
        tokenizer = cfg.tokenizer or name
        lengths = data_lengths(cfg.data, tokenizer, cfg.max_length, cfg.seed)
        lengths_from = f"{', '.join(cfg.data)} (tokenizer {tokenizer})"
    else:
        lengths = [min(n, cfg.max_length) for n in alpaca_lengths()]
        lengths_from = f"{LENGTHS.name} (Alpaca, chars/4 + 30)"
    vocab = model.config.get_text_config().vocab_size
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    return model, vocab, pad_id, lengths, source, lengths_from


def run(cfg: BenchTrainConfig) -> dict[str, Any]:
    from swiftkit.loading import default_device, torch_dtype
    from swiftkit.train import packing
    from swiftkit.train.config import SFTConfig

    for key in ("padded_batch", "batch_size", "max_length", "steps"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise SwiftkitError(f"--{key.replace('_', '-')} must be at least 1")
    if cfg.data and cfg.tokenizer is None and cfg.model_config_name in ARCHITECTURES:
        raise SwiftkitError(
            f"--data needs a tokenizer: {cfg.model_config_name} is a random-init architecture",
            "pass --tokenizer MODEL (whose tokenizer the data is measured with), or leave out --data",
        )
    import datasets

    datasets.disable_progress_bars()  # TRL's packing runs a datasets map per pool
    device = torch.device(default_device())
    dtype = torch_dtype(cfg.dtype)
    torch.manual_seed(cfg.seed)
    model, vocab, pad_id, lengths, source, lengths_from = _model_and_lengths(cfg, dtype, device)
    model = _peft(model, cfg.lora_r).train()
    batches = Batches(lengths, vocab, pad_id, cfg.seed, device)
    # swiftkit sft's own packing decisions for these flags (strategy, fixed step shape, attention kernel).
    sft = SFTConfig(model="bench", data=["bench"], packing=True, batch_size=cfg.batch_size, max_length=cfg.max_length)
    bins = packing.batch_size(sft)
    sft = sft.model_copy(update={"batch_size": bins})
    pack_args = packing.sft_args(sft)
    console.print(
        f"[bold]bench train[/] {source} on {device.type} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), "
        f"{dtype}, lengths from {lengths_from}: {len(lengths)} rows, mean {sum(lengths) / len(lengths):.1f}, max {max(lengths)}"
    )
    results: list[Result] = []
    model.get_base_model().set_attn_implementation("sdpa")
    results.append(measure(model, f"padded x{cfg.padded_batch}", lambda: batches.padded(cfg.padded_batch), False, cfg, device))
    console.print(f"  {_line(results[-1])}")
    packing.prepare_model(sft, model.get_base_model())  # FlexAttention on CUDA, as swiftkit sft
    attn = model.get_base_model().config._attn_implementation
    name = f"swiftkit {bins}x{cfg.max_length} {attn}"
    results.append(measure(model, name, lambda: batches.packed(pack_args, bins, cfg.max_length), True, cfg, device))
    results[-1].notes = {"attention": attn, **{k: v for k, v in pack_args.items() if k != "packing"}}
    console.print(f"  {_line(results[-1])}")
    padded, fast = results
    report = {
        "model": source,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "lengths": {"from": lengths_from, "rows": len(lengths), "mean": sum(lengths) / len(lengths), "max": max(lengths)},
        "lora_r": cfg.lora_r,
        "versions": _versions(),
        "results": [asdict(r) for r in results],
        "speedup": fast.tok_s / padded.tok_s,
        "memory_ratio": fast.peak_gib / padded.peak_gib if fast.peak_gib and padded.peak_gib else None,
    }
    _table(report, results)
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(json.dumps(report, indent=1) + "\n")
        console.print(f"results: {cfg.output}")
    return report


def _line(r: Result) -> str:
    peak = f"{r.peak_gib:.1f} GiB" if r.peak_gib is not None else "-"
    return f"{r.path:28s} {r.tok_s:>10,.0f} tok/s  {peak:>9s}  padding {r.padding:.0%}  {r.step_s:.3f} s/step"


def _table(report: dict[str, Any], results: list[Result]) -> None:
    from rich.table import Table

    table = Table(
        title=f"bench train: {report['model']} ({report['device']})",
        title_justify="left",
        caption="padded: rows padded to the longest, sdpa, full-logits loss; swiftkit: packed (TRL bfd, padding-free, "
        "isolated attention) + TRL chunked LM-head loss",
        caption_justify="left",
    )
    for col in ("path", "real tok/s", "x padded", "peak GiB", "% of padded peak", "padding", "tokens/step", "s/step", "loss"):
        table.add_column(col, justify="left" if col == "path" else "right")
    base = results[0]
    for r in results:
        mem = f"{r.peak_gib:.1f}" if r.peak_gib is not None else "-"
        mem_ratio = f"{r.peak_gib / base.peak_gib:.0%}" if r.peak_gib and base.peak_gib else "-"
        table.add_row(r.path, f"{r.tok_s:,.0f}", f"{r.tok_s / base.tok_s:.2f}", mem, mem_ratio, f"{r.padding:.0%}",
                      f"{r.tokens_per_step:,.0f}", f"{r.step_s:.3f}", f"{r.loss:.3f}")
    out.print(table)


def _versions() -> dict[str, str | None]:
    import importlib.metadata

    found: dict[str, str | None] = {}
    for pkg in ("torch", "transformers", "peft", "trl", "triton"):
        try:
            found[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            found[pkg] = None
    return found

