"""Fidelity and speed of `swiftkit eval` backends against lm-eval's own `hf` backend, in one run.

    python benchmarks/eval_fidelity.py --model runs/q/sft --data-dir ../shared/data --limit 20 [--serve]

Runs the same MMLU subset + GSM8K through: lm-eval's `hf` backend (the reference), swiftkit's engine
and local backends, optionally the endpoint backend against `swiftkit serve` on the same model, and a control
(local backend with a deliberately wrong chat template) that the comparison must flag. For every
sample it compares the rendered prompts, each answer choice's log-likelihood (|diff| <= 1e-4), the
argmax prediction, and for generation tasks the raw generation and the extracted answer. Prints a
table with wall times (scoring only, model load excluded) and exits 1 when a real backend differs
or the control does not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from swiftkit.artifacts import read_manifest  # noqa: E402
from swiftkit.eval.config import EvalConfig  # noqa: E402
from swiftkit.eval.evaluate import run  # noqa: E402
from swiftkit.loading import tokenizer_dir  # noqa: E402
from swiftkit.resolve import resolve_model_ref  # noqa: E402

TOLERANCE = 1e-4
WRONG_TEMPLATE = (  # Llama-2 style: a plausible template, just not the one this model was trained with
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + ' </s>' }}{% endif %}{% endfor %}"
)


def _samples(artifact: Path) -> dict[str, list[dict]]:
    return {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in (artifact / "samples").glob("*.jsonl")}


def compare(reference: Path, candidate: Path, fits: Callable[[dict], bool]) -> dict[str, float]:
    """Per-sample differences of `candidate` against `reference`, over samples that fit the context.

    A prompt longer than the context is truncated, and lm-eval truncates differently in its hf and
    API backends (the server also needs room for one generated token), so those samples are counted
    apart instead of compared.
    """
    ref, cand = _samples(reference), _samples(candidate)
    diff = {"max_ll_diff": 0.0, "prompt_diffs": 0, "pred_diffs": 0, "gen_diffs": 0, "answer_diffs": 0, "samples": 0}
    diff["truncated"] = 0
    for task, rows in ref.items():
        for a, b in zip(rows, cand.get(task, []), strict=True):
            if not fits(a):
                diff["truncated"] += 1
                continue
            diff["samples"] += 1
            diff["prompt_diffs"] += a["arguments"] != b["arguments"]
            if isinstance(a["resps"][0][0], list):  # loglikelihood: [[ll, greedy]] per choice
                lls_a = [r[0][0] for r in a["resps"]]
                lls_b = [r[0][0] for r in b["resps"]]
                diff["max_ll_diff"] = max(diff["max_ll_diff"], *(abs(x - y) for x, y in zip(lls_a, lls_b, strict=True)))
                diff["pred_diffs"] += lls_a.index(max(lls_a)) != lls_b.index(max(lls_b))
            else:
                diff["gen_diffs"] += a["resps"] != b["resps"]
                diff["answer_diffs"] += a["filtered_resps"] != b["filtered_resps"]
    return diff


def identical(diff: dict[str, float]) -> bool:
    counts = ("prompt_diffs", "pred_diffs", "gen_diffs", "answer_diffs")
    return diff["max_ll_diff"] <= TOLERANCE and not any(diff[k] for k in counts)


def context_check(model: str, max_gen_toks: int) -> Callable[[dict], bool]:
    """Whether a sample's prompt (+ answer, or + room to generate) fits the model's context."""
    from transformers import AutoConfig, AutoTokenizer

    ref = resolve_model_ref(model)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir(ref))
    context = AutoConfig.from_pretrained(ref.base_path).max_position_embeddings

    def fits(sample: dict) -> bool:
        for request in sample["arguments"]:
            text, second = request[0], request[1]
            extra = len(tokenizer(second).input_ids) if isinstance(second, str) else max_gen_toks
            if len(tokenizer(text).input_ids) + extra >= context:
                return False
        return True

    return fits


def wrong_template_copy(model: str, folder: Path) -> str:
    """A copy of the artifact that holds the tokenizer, with another chat template."""
    ref = resolve_model_ref(model)
    source = tokenizer_dir(ref)
    copy = shutil.copytree(source, folder / f"wrong-template-{source.name}")
    (copy / "chat_template.jinja").write_text(WRONG_TEMPLATE)
    config_file = copy / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    if "chat_template" in config:
        config["chat_template"] = WRONG_TEMPLATE
        config_file.write_text(json.dumps(config))
    return str(copy)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "swiftkit", "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("swiftkit serve exited during start-up") from None
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("swiftkit serve did not start in 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--tasks", default="mmlu,gsm8k")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-gen-toks", type=int, default=64)
    parser.add_argument("--num-fewshot", type=int, default=None, help="default: each task's own (gsm8k 5)")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--serve", action="store_true", help="also score the endpoint backend against swiftkit serve")
    args = parser.parse_args()

    common = {
        "tasks": args.tasks.split(","),
        "data_dir": args.data_dir,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "max_gen_toks": args.max_gen_toks,
        "chat": args.chat,
        "num_fewshot": args.num_fewshot,
    }
    with tempfile.TemporaryDirectory(prefix="eval-fidelity-") as scratch:
        root = Path(scratch)
        runs: dict[str, Path] = {}
        started = {}

        def score(name: str, **config) -> None:
            started[name] = time.time()
            runs[name] = run(EvalConfig(output=str(root / name), **common, **config))[0]
            started[name] = time.time() - started[name]

        score("lm-eval hf (reference)", model=[args.model], backend="hf")
        score("swiftkit engine", model=[args.model], backend="engine")
        score("swiftkit local", model=[args.model], backend="local")
        if args.serve:
            server, url = start_server(args.model)
            try:
                score("swiftkit endpoint (swiftkit serve)", url=url, tokenizer=args.model)
            finally:
                server.terminate()
                server.wait(timeout=30)
        score("control: local, wrong chat template", model=[wrong_template_copy(args.model, root)], backend="local")

        fits = context_check(args.model, args.max_gen_toks)
        reference_name = "lm-eval hf (reference)"
        reference = runs[reference_name]
        ref_wall = read_manifest(reference).metrics["wall_s"]
        print(
            f"\nmodel {args.model}; tasks {args.tasks}; limit {args.limit}; few-shot {args.num_fewshot}; "
            f"batch {args.batch_size}; chat {args.chat}\n"
        )
        print("| backend | scores | scoring wall s | vs hf | total s | max abs Δ loglik | prompt / pred / gen / answer diffs | verdict |")
        print("|---|---|---|---|---|---|---|---|")
        failed = False
        for name, artifact in runs.items():
            metrics = read_manifest(artifact).metrics
            scores = ", ".join(f"{t} {v:.4f}" for t, v in metrics["scores"].items())
            diff = compare(reference, artifact, fits)
            same = identical(diff)
            control = name.startswith("control")
            verdict = ("flagged (as it must be)" if not same else "NOT FLAGGED") if control else ("identical" if same else "DIFFERS")
            failed |= same if control else not same
            counts = (
                f"{diff['prompt_diffs']} / {diff['pred_diffs']} / {diff['gen_diffs']} / {diff['answer_diffs']} "
                f"of {diff['samples']} ({diff['truncated']} over the context, not compared)"
            )
            print(
                f"| {name} | {scores} | {metrics['wall_s']:.1f} | {ref_wall / metrics['wall_s']:.2f}× | "
                f"{started[name]:.1f} | {diff['max_ll_diff']:.2e} | {counts} | {verdict} |"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
