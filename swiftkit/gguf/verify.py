"""Check a GGUF in llama.cpp against the transformers model it was made from.

On fixed chat prompts the transformers model's greedy continuation is fed to llama.cpp (teacher
forcing): at every position llama.cpp's own greedy pick must be the same token, and the log-probability
it gives that token is compared. The same prompts must tokenize to the same ids, the chat template and
eos must survive in the metadata, and perplexity on a fixed text shows what each quant type costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from swiftkit.artifacts import ServingInfo

PROMPTS = [
    "What is the capital of France?",
    "Write one sentence about the ocean.",
    "List three primary colors.",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish.",
    "What is 12 plus 30?",
    "Give me a synonym for 'happy'.",
    "Name a planet in our solar system.",
    "Why is the sky blue? Answer briefly.",
    "Who wrote Romeo and Juliet?",
    "Describe a cat in five words.",
    "What comes after Monday?",
]
# A divergence where the reference's top-2 log-probabilities are closer than this is a near-tie that
# float16 rounding may flip, not a conversion error.
NEAR_TIE = 0.1
PPL_TOKENS = 512


@dataclass
class Reference:
    """The transformers model's answers to the fixed prompts, and its perplexity on the fixed text."""

    prompts: list[list[int]]
    continuations: list[list[int]]
    logprobs: list[list[float]]
    margins: list[list[float]]
    ppl_ids: list[int]
    ppl: float
    serving: ServingInfo
    texts: list[str] = field(default_factory=list)


def prompt_texts(tokenizer, n: int) -> list[str]:
    if isinstance(tokenizer.chat_template, str):
        return [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in PROMPTS[:n]
        ]
    return [f"Question: {p}\nAnswer:" for p in PROMPTS[:n]]


def reference(model, tokenizer, serving: ServingInfo, n_prompts: int, n_tokens: int) -> Reference:
    import torch

    from swiftkit.quant.calibration import DEFAULT_TEXT

    texts = prompt_texts(tokenizer, n_prompts)
    prompts, continuations, logprobs, margins = [], [], [], []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            out = model.generate(
                torch.tensor([ids]),
                max_new_tokens=n_tokens,
                do_sample=False,
                eos_token_id=serving.eos_token_ids or None,
                pad_token_id=tokenizer.pad_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
            new = out.sequences[0, len(ids) :].tolist()
            steps = [torch.log_softmax(s[0].float(), -1) for s in out.scores][: len(new)]
            prompts.append(ids)
            continuations.append(new)
            logprobs.append([float(lp[t]) for lp, t in zip(steps, new, strict=True)])
            top2 = [lp.topk(2).values for lp in steps]
            margins.append([float(t[0] - t[1]) for t in top2])
        ppl_ids = tokenizer(DEFAULT_TEXT.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"][:PPL_TOKENS]
        logits = model(torch.tensor([ppl_ids])).logits[0].float()
        nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ppl_ids[1:]))
    return Reference(prompts, continuations, logprobs, margins, ppl_ids, math.exp(float(nll)), serving, texts)


def agreement(gguf_file: Path, ref: Reference) -> dict:
    """How closely llama.cpp running `gguf_file` reproduces the reference (see the module docstring)."""
    import numpy as np

    from swiftkit.gguf.llama_cpp import load

    n_ctx = max(len(ref.ppl_ids), *(len(p) + len(c) for p, c in zip(ref.prompts, ref.continuations, strict=True))) + 8
    llm = load(gguf_file, n_ctx)
    try:
        equal, near_ties, tokenized_equal, max_delta, first_divergence = 0, 0, 0, 0.0, []
        for text, ids, cont, lps, margins in zip(ref.texts, ref.prompts, ref.continuations, ref.logprobs, ref.margins, strict=True):
            tokenized_equal += llm.tokenize(text.encode(), add_bos=False, special=True) == ids
            llm.reset()
            llm.eval(ids + cont)
            rows = _log_softmax(np.asarray(llm.scores[len(ids) - 1 : len(ids) - 1 + len(cont)], dtype=np.float64))
            picks = rows.argmax(-1).tolist()
            diverged = next((i for i, (a, b) in enumerate(zip(picks, cont, strict=True)) if a != b), None)
            if diverged is None:
                equal += 1
            elif margins[diverged] < NEAR_TIE:
                near_ties += 1
            first_divergence.append(diverged)
            max_delta = max(max_delta, *(abs(float(rows[i, t]) - lps[i]) for i, t in enumerate(cont)))
        llm.reset()
        llm.eval(ref.ppl_ids)
        rows = _log_softmax(np.asarray(llm.scores[: len(ref.ppl_ids) - 1], dtype=np.float64))
        nll = -float(np.mean(rows[np.arange(len(rows)), ref.ppl_ids[1:]]))
        meta = llm.metadata
        return {
            "prompts": len(ref.prompts),
            "greedy_equal": equal,
            "greedy_near_ties": near_ties,
            "first_divergence": first_divergence,
            "tokenization_equal": tokenized_equal,
            "max_abs_logprob_delta": round(max_delta, 5),
            "ppl_reference": round(ref.ppl, 4),
            "ppl": round(math.exp(nll), 4),
            "chat_template_kept": meta.get("tokenizer.chat_template") == ref.serving.chat_template,
            "eos_kept": llm.token_eos() in ref.serving.eos_token_ids,
        }
    finally:
        llm.close()


def failures(check: dict, exact: bool, max_ppl_increase: float | None) -> list[str]:
    """Why a check fails: any file must tokenize alike and keep template and eos; f16/bf16 must match greedily."""
    found = []
    if check["tokenization_equal"] < check["prompts"]:
        found.append(f"llama.cpp tokenizes {check['prompts'] - check['tokenization_equal']} of {check['prompts']} prompts differently")
    if not check["chat_template_kept"]:
        found.append("the chat template in the GGUF metadata differs from the model's")
    if not check["eos_kept"]:
        found.append("llama.cpp's eos token is not one of the model's eos tokens")
    real = check["prompts"] - check["greedy_equal"] - check["greedy_near_ties"]
    if exact and real:
        found.append(f"greedy tokens differ on {real} of {check['prompts']} prompts (not at near-ties)")
    if max_ppl_increase is not None and check["ppl"] > check["ppl_reference"] * (1 + max_ppl_increase):
        found.append(f"perplexity {check['ppl']:.4g} exceeds the source's {check['ppl_reference']:.4g} by more than {max_ppl_increase:.0%}")
    return found


def _log_softmax(x):
    import numpy as np

    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))
