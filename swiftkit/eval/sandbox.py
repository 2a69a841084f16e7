"""Run model-written code (HumanEval) in a separate, limited Python process.

lm-eval's own scorer fetches the `code_eval` metric from the hub and runs programs in threads of
the evaluating process; here each program runs in a fresh `python -I` in an empty temp folder,
with a wall-clock timeout, an address-space limit and a minimal environment. That contains
accidents (infinite loops, memory blow-ups, stray files), not a determined attacker: for
untrusted models run the whole eval in a container. Only reached with --allow-code-execution.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

TIMEOUT_S = 10.0
MEMORY_BYTES = 2 << 30


def _limit_resources() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def passes(program: str, timeout: float = TIMEOUT_S) -> bool:
    """True when `program` exits 0 within the limits."""
    with tempfile.TemporaryDirectory(prefix="swiftkit-sandbox-") as folder:
        path = os.path.join(folder, "program.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(program)
        try:
            proc = subprocess.run(
                [sys.executable, "-I", path],
                cwd=folder,
                capture_output=True,
                timeout=timeout,
                env={"PATH": "/usr/bin:/bin", "HOME": folder},
                preexec_fn=_limit_resources,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0


def process_humaneval(doc: dict, results: list[str]) -> dict[str, float]:
    """pass@1 of one greedy completion: prompt + completion + the task's tests."""
    program = f"{doc['prompt']}{results[0]}\n\n{doc['test']}\ncheck({doc['entry_point']})\n"
    return {"pass@1": float(passes(program))}
