"""Trainer callbacks: the live rich progress bar (loss, lr, tokens/s, ETA) replacing HF's tqdm."""

from __future__ import annotations

import time

from transformers import TrainerCallback

from swiftkit.console import progress


class RichProgress(TrainerCallback):
    """One progress bar on the main process; the latest loss / lr / tokens/s in its info column."""

    def __init__(self, description: str):
        self.description = description
        self.bar = None
        self.task = None
        self.info: dict[str, str] = {}
        self.started = 0.0
        self.tokens_at_start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.bar = progress()
        self.bar.start()
        self.task = self.bar.add_task(self.description, total=state.max_steps, completed=state.global_step, info="")
        self.started = time.time()
        # On resume, tokens seen before the interruption must not inflate tokens/s.
        self.tokens_at_start = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        elapsed = max(time.time() - self.started, 1e-9)
        tokens = state.num_input_tokens_seen - self.tokens_at_start
        if tokens:
            self.info["tok/s"] = f"{tokens / elapsed:,.0f}"
        self.bar.update(self.task, completed=state.global_step, info="  ".join(f"{k} {v}" for k, v in self.info.items()))

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, label in (("loss", "loss"), ("learning_rate", "lr"), ("eval_loss", "eval")):
            if logs and key in logs:
                self.info[label] = f"{logs[key]:.4g}"

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
