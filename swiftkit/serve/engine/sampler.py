"""Turn a batch of logits into one token per row, each row with its own sampling parameters.

Order follows vLLM: logit_bias, min_tokens, penalties and the grammar mask edit the logits; the
reported logprobs are the model's raw distribution (what OpenAI's `logprobs` means); then
temperature, top-k, top-p, min-p and the draw. Rows that need nothing special stay vectorised;
only rows that ask for a per-row processor pay for a Python loop. A seeded row draws from its own
generator, so its tokens do not depend on what else is in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from swiftkit.serve.engine.request import Request, TokenLogprob


class Sampler:
    def __init__(self, eos_ids: Sequence[int], seed: int = 0, device: torch.device | str = "cpu"):
        self.eos_ids = list(eos_ids)
        self.generator = torch.Generator(device).manual_seed(seed)

    def __call__(self, logits: torch.Tensor, requests: Sequence[Request]) -> tuple[list[int], list[TokenLogprob | None]]:
        raw = logits = logits.float()
        edits = [self._needs_edit(r) for r in requests]
        if any(edits):
            logits = logits.clone()  # `raw` keeps the model's own distribution for logprobs
            for b, req in enumerate(requests):
                if edits[b]:
                    try:
                        self._edit_row(logits[b], req)
                    except Exception as exc:  # this row's processors (e.g. its grammar): fails this request only
                        req.error = f"{type(exc).__name__}: {exc}"
        tokens = self._draw(logits, requests)
        return tokens, self._logprobs(raw, tokens, requests)

    @staticmethod
    def _needs_edit(req: Request) -> bool:
        p = req.params
        return bool(p.logit_bias or len(req.output_ids) < p.min_tokens or p.needs_penalties or req.matcher is not None)

    def _edit_row(self, row: torch.Tensor, req: Request) -> None:
        p = req.params
        vocab, dev = row.shape[0], row.device
        if p.logit_bias:
            ids = torch.tensor([i for i in p.logit_bias if i < vocab], dtype=torch.long, device=dev)
            row[ids] += torch.tensor([p.logit_bias[i] for i in p.logit_bias if i < vocab], device=dev)
        if len(req.output_ids) < p.min_tokens:
            row[[i for i in (*self.eos_ids, *p.stop_token_ids) if i < vocab]] = float("-inf")
        if p.needs_penalties:
            out = torch.tensor(req.output_ids, dtype=torch.long, device=dev)
            if p.presence_penalty or p.frequency_penalty:
                counts = torch.bincount(out, minlength=vocab)[:vocab].float() if len(out) else torch.zeros(vocab, device=dev)
                row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).float()
            if p.repetition_penalty != 1.0:
                seen = torch.tensor(sorted(set(req.prompt_ids) | set(req.output_ids)), dtype=torch.long, device=dev)
                vals = row[seen]
                row[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if req.matcher is not None:
            allowed = torch.frombuffer(bytearray(req.matcher.compute_logit_bias()), dtype=torch.uint8).bool().to(dev)
            n = min(vocab, allowed.shape[0])
            keep = torch.zeros(vocab, dtype=torch.bool, device=dev)
            keep[:n] = allowed[:n]
            row.masked_fill_(~keep, float("-inf"))

    def _draw(self, logits: torch.Tensor, requests: Sequence[Request]) -> list[int]:
        greedy = [r.params.greedy for r in requests]
        if all(greedy):
            return logits.argmax(-1).tolist()
        temps = torch.tensor([1.0 if g else r.params.temperature for g, r in zip(greedy, requests, strict=True)],
                             device=logits.device)
        scaled = logits / temps[:, None]
        if any(r.params.needs_filtering for r in requests):
            scaled = self._filter(scaled, requests)
        probs = torch.softmax(scaled, -1)
        # Exponential race (Gumbel-max equivalent): argmax(p / q), q ~ Exp(1); lets each seeded row
        # draw its noise from its own generator while unseeded rows share one draw.
        noise = torch.empty_like(probs).exponential_(generator=self.generator)
        for b, req in enumerate(requests):
            if req.generator is not None:
                noise[b].exponential_(generator=req.generator)
        sampled = (probs / noise).argmax(-1)
        # one device→host transfer for the whole batch
        return torch.where(torch.tensor(greedy, device=logits.device), logits.argmax(-1), sampled).tolist()

    @staticmethod
    def _filter(scaled: torch.Tensor, requests: Sequence[Request]) -> torch.Tensor:
        vocab, dev = scaled.shape[-1], scaled.device
        top_k = torch.tensor([r.params.top_k if r.params.top_k > 0 else vocab for r in requests], device=dev)
        top_p = torch.tensor([r.params.top_p for r in requests], device=dev)
        min_p = torch.tensor([r.params.min_p for r in requests], device=dev)
        sorted_logits, order = scaled.sort(-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        rank = torch.arange(vocab, device=dev)[None, :]
        drop = rank >= top_k[:, None]
        # top-p: drop a token once the mass *before* it already reaches p (the top token always stays).
        drop |= (sorted_probs.cumsum(-1) - sorted_probs) >= top_p[:, None]
        drop |= sorted_probs < min_p[:, None] * sorted_probs[:, :1]
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        return torch.empty_like(scaled).scatter_(-1, order, sorted_logits)

    @staticmethod
    def _logprobs(raw: torch.Tensor, tokens: list[int], requests: Sequence[Request]) -> list[TokenLogprob | None]:
        wanted = [r.params.logprobs for r in requests]
        if all(w is None for w in wanted):
            return [None] * len(requests)
        logp = torch.log_softmax(raw, -1)
        out: list[TokenLogprob | None] = []
        for b, k in enumerate(wanted):
            if k is None:
                out.append(None)
                continue
            entry = TokenLogprob(tokens[b], float(logp[b, tokens[b]]))
            if k > 0:
                vals, ids = logp[b].topk(k)
                entry.top = list(zip(ids.tolist(), vals.tolist(), strict=True))
            out.append(entry)
        return out


def prompt_logprobs(logits: torch.Tensor, prompt_ids: list[int], k: int) -> list[TokenLogprob | None]:
    """Logprob of each prompt token given the ones before it (logits: [T, V] for this prompt).

    One gather and one top-k over all positions, then one copy to the host: per-position indexing cost three
    device syncs per token, which made a 1,000-request MMLU eval on the H200 spend minutes here."""
    logp = torch.log_softmax(logits[:len(prompt_ids) - 1].float(), -1)
    targets = torch.tensor(prompt_ids[1:], dtype=torch.long, device=logp.device)
    chosen = logp.gather(-1, targets[:, None])[:, 0].tolist()
    out: list[TokenLogprob | None] = [None]
    if k > 0:
        vals, ids = logp.topk(k, -1)
        for tok, lp, top_ids, top_vals in zip(prompt_ids[1:], chosen, ids.tolist(), vals.tolist(), strict=True):
            out.append(TokenLogprob(tok, lp, list(zip(top_ids, top_vals, strict=True))))
    else:
        out.extend(TokenLogprob(tok, lp) for tok, lp in zip(prompt_ids[1:], chosen, strict=True))
    return out
