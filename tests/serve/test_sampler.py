"""The sampler's arithmetic on hand-made logits (penalties, filters, seeds) — exact where HTTP can't be."""

from __future__ import annotations

import torch

from swiftkit.serve.engine.request import Request, SamplingParams
from swiftkit.serve.engine.sampler import Sampler

EOS = 0


def req(prompt: list[int], output: list[int], **params) -> Request:
    r = Request(prompt, SamplingParams(**params), sink=lambda out: None)
    r.output_ids = list(output)
    return r


def processed(r: Request, logits: torch.Tensor) -> torch.Tensor:
    row = logits.clone()
    Sampler([EOS])._edit_row(row, r)
    return row


def test_presence_frequency_and_repetition_penalties():
    logits = torch.tensor([0.0, 2.0, -2.0, 1.0, 3.0])
    r = req([4], [1, 1, 2], presence_penalty=0.5, frequency_penalty=0.25)
    expected = logits - torch.tensor([0, 0.5 + 2 * 0.25, 0.5 + 0.25, 0, 0])
    torch.testing.assert_close(processed(r, logits), expected)
    r = req([4], [1, 2], repetition_penalty=2.0)  # prompt and output tokens; positive / 2, negative * 2
    torch.testing.assert_close(processed(r, logits), torch.tensor([0.0, 1.0, -4.0, 1.0, 1.5]))


def test_logit_bias_and_min_tokens_block_eos_and_stop_ids():
    logits = torch.zeros(5)
    out = processed(req([1], [], logit_bias={3: 5.0}, min_tokens=2, stop_token_ids=[4]), logits)
    assert out[3] == 5.0 and out[EOS] == float("-inf") and out[4] == float("-inf")
    assert processed(req([1], [2, 2], min_tokens=2), logits)[EOS] == 0.0  # reached: eos allowed again


def test_filters_keep_only_allowed_tokens():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]] * 3)
    reqs = [req([1], [], temperature=1.0, top_k=2), req([1], [], temperature=1.0, top_p=0.5),
            req([1], [], temperature=1.0, min_p=0.3)]
    kept = torch.isfinite(Sampler._filter(logits, reqs))
    assert kept[0].tolist() == [False, False, True, True]
    assert kept[1].tolist() == [False, False, False, True]  # top token alone already holds > 50%
    assert kept[2].tolist() == [False, False, True, True]  # p(2)/p(3) = e^-1 = 0.37 >= 0.3, p(1)/p(3) = 0.14 < 0.3


def test_seeded_rows_do_not_depend_on_batch_neighbours():
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(0))

    def draw(batch: int) -> list[int]:
        sampler = Sampler([EOS], seed=batch)
        rows = []
        for _ in range(5):
            r = req([1], [], temperature=1.0, seed=7)
            r.generator = torch.Generator().manual_seed(7)
            others = [req([1], [], temperature=1.0) for _ in range(batch - 1)]
            batch_rows = [r, *others]
            tokens, _ = sampler(logits.repeat(batch, 1), batch_rows)
            rows.append(tokens[0])
        return rows

    assert draw(1) == draw(4)


def test_greedy_logprobs_are_the_model_distribution():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    tokens, lps = Sampler([EOS])(logits, [req([1], [], temperature=0.0, logprobs=2, logit_bias={0: 10.0})])
    assert tokens == [0]  # the bias decides the token ...
    raw = torch.log_softmax(logits[0], -1)
    assert abs(lps[0].logprob - float(raw[0])) < 1e-6  # ... but the logprob is the model's own
    assert [t for t, _ in lps[0].top] == [1, 2]
