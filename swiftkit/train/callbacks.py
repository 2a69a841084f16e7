"""Trainer callbacks: the live rich progress bar (loss, lr, tokens/s, ETA) replacing HF's tqdm, and per-step
timing (steady-state tokens/s after warm-up, peak GPU memory) for the manifest."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from swiftkit.console import progress


class RichProgress(TrainerCallback):
    """One progress bar on the main process; the latest loss / lr / tokens/s in its info column."""

    def __init__(self, description: str, shown: tuple[tuple[str, str], ...] = ()):
        self.description = description
        # (log key, label) shown besides loss / lr / eval: a stage's own live metrics (GRPO's rewards, KL).
        self.shown = (("loss", "loss"), ("learning_rate", "lr"), ("eval_loss", "eval"), *shown)
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
        for key, label in self.shown:
            if logs and key in logs:
                self.info[label] = f"{logs[key]:.4g}"

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class StepTiming(TrainerCallback):
    """Wall time and real (non-padding) tokens of every optimizer step this process runs.

    The first steps pay for compiling (FlexAttention, Triton kernels) and allocator growth, so the
    overall tokens/s of a short run understates the speed; steady-state tokens/s leaves out the first
    `max(min_warmup, warmup_fraction x steps)` steps (at most half of them). The CUDA stream is
    synchronised only at the two ends of the steady window, so timing costs the training nothing.
    """

    def __init__(self, warmup_fraction: float = 0.1, min_warmup: int = 5):
        self.warmup_fraction, self.min_warmup = warmup_fraction, min_warmup
        self.cuda = False
        self.warmup = 0
        self.steps = 0
        self.start_step = 0
        self.start_tokens = 0
        self.marks: list[tuple[float, int]] = []  # (time, tokens seen) at train begin and after each step

    def on_train_begin(self, args, state, control, **kwargs):
        import torch

        self.cuda = torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        # Steps this process will run (a resumed run compiles again, so warm-up counts from here).
        total = max(state.max_steps - state.global_step, 0)
        self.warmup = min(max(self.min_warmup, math.ceil(self.warmup_fraction * total)), total // 2)
        self.steps = 0
        self.start_step = state.global_step  # > 0 when resumed from a checkpoint
        self.start_tokens = state.num_input_tokens_seen
        self.marks = [(self._now(), state.num_input_tokens_seen)]

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        # Synchronise where the steady window opens and at the last step; elsewhere the clock may run
        # ahead of the GPU by a step, which the window's two synchronised ends cancel out.
        last = state.global_step >= state.max_steps
        self.marks.append((self._now(sync=self.steps == self.warmup or last), state.num_input_tokens_seen))

    def _now(self, sync: bool = True) -> float:
        if sync and self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def metrics(self) -> dict[str, Any]:
        """Manifest metrics: steady-state tokens/s and its window, warm-up time, peak GPU memory."""
        out: dict[str, Any] = {}
        if self.cuda:
            import torch

            out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if len(self.marks) < 2:
            return out
        start, end = self.marks[0], self.marks[-1]
        warm = self.marks[self.warmup]
        steady_s, steady_tokens = end[0] - warm[0], end[1] - warm[1]
        out.update(warmup_steps=self.warmup, warmup_s=warm[0] - start[0], steady_steps=self.steps - self.warmup)
        if self.steps > self.warmup and steady_s > 0:
            out.update(steady_tokens=steady_tokens, steady_s=steady_s, steady_tokens_per_second=steady_tokens / steady_s)
        return out


# Written into a checkpoint folder after everything else in it: a folder without it is a save that was
# cut off (kill, full disk) and must never be resumed from.
CHECKPOINT_COMPLETE = "swiftkit-checkpoint-complete"


class CheckpointMarker(TrainerCallback):
    """Marks each checkpoint complete once the Trainer has written all of it, and logs at every save.

    The log at the save step makes the checkpoint's log history cover every step before it, so a
    resumed run can report the whole run's train loss (swiftkit.train.common.train_loss).
    """

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank has written its part (FSDP / ZeRO shards)
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / CHECKPOINT_COMPLETE).write_text(f"{state.global_step}\n")
