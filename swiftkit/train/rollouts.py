"""GRPO rollouts on swiftkit's own continuous-batching engine, colocated with training.

Generation is most of a GRPO step, and TRL's default path is `model.generate` on a padded batch. Here the
same policy modules run under swiftkit's engine (serve/engine): continuous batching, a KV cache that lives
across steps, and on CUDA the fast decoder with CUDA graphs. The engine holds the policy's own modules,
not a copy, so every rollout reads the weights the optimizer just updated (LoRA included: the LoRA layers
are called in the forward) and nothing is synced between steps.

The fast decoder fuses plain `nn.Linear` projections into one weight (fast_model._fused), replacing those
parameters: harmless for the frozen base under LoRA, wrong for full fine-tuning, where the optimizer owns
them. Full fine-tuning therefore rolls out on the engine's plain runner (the transformers forward).
"""

from __future__ import annotations

from collections.abc import Sequence

from swiftkit.serve.engine.request import Request, RequestOutput, SamplingParams


class EngineRollouts:
    """`generate(prompt_ids, ...)` -> completion token ids, on an engine built once per training run."""

    def __init__(self, model, tokenizer, eos_ids: Sequence[int], max_seqs: int, max_model_len: int, full_finetune: bool, seed: int):
        from swiftkit.serve.engine.engine import Engine, EngineOptions
        from swiftkit.serve.engine.fast_model import decoder_of

        self.model = model
        self.max_model_len = max_model_len
        options = EngineOptions(
            max_num_seqs=max_seqs,
            max_model_len=max_model_len,
            max_queue=1 << 16,
            seed=seed,
            engine="plain" if full_finetune else "auto",
        )
        with _eval_mode(model):
            self.engine = Engine(decoder_of(model), tokenizer, eos_ids, options)
        self.tokens = 0

    def generate(
        self, prompt_ids: list[list[int]], max_tokens: int, temperature: float, top_p: float = 1.0, top_k: int = 0, greedy: bool = False
    ) -> list[list[int]]:
        """One completion per prompt (repeat a prompt for a group), each ending with its eos if it stopped."""
        # The optimizer moved the weights since the last call: prefixes cached then are stale (within
        # one call they are not, and a group's copies of a prompt share its prefill).
        self.engine.weights_changed()
        outputs: list[list[int]] = [[] for _ in prompt_ids]
        for i, ids in enumerate(prompt_ids):
            budget = max(1, min(max_tokens, self.max_model_len - len(ids)))
            params = SamplingParams(
                max_tokens=budget, temperature=0.0 if greedy else temperature, top_p=top_p, top_k=top_k, skip_special_tokens=False
            )

            def sink(out: RequestOutput, i: int = i) -> None:
                outputs[i].extend(out.token_ids)

            self.engine.submit(Request(list(ids), params, sink=sink))
        with _eval_mode(self.model):
            self.engine.drain()
        self.tokens += sum(map(len, outputs))
        return outputs


class _eval_mode:
    """Dropout off while generating; the previous mode back afterwards (TRL trains right after)."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)


def prompt_ids(tokenizer, rows: list[dict]) -> list[list[int]]:
    """Each row's chat prompt as token ids, ready for a generation turn (held-out measures of grpo and distill)."""
    out = []
    for row in rows:
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return out
