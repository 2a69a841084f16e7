"""What the usage/audit log costs a request, and how fast the database takes usage rows (docs/serve.md).

    .venv/bin/python benchmarks/serve_audit.py --model .cache/toy-<hash> [--postgres URL] [--rounds 2]

Part 1: two `swiftkit serve` processes on the same model, one plain (`--api-key`), one with `--database`
(SQLite), a tenant key with rpm/tpm limits and `--audit-content`; `swiftkit bench serve` runs against each
in turn, `--rounds` times (A B A B), short completions so per-request costs show. Part 2: usage rows
written straight through `db.write_usage` (one transaction per batch) into SQLite and, with --postgres,
PostgreSQL, for a few batch sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swiftkit.serve import db  # noqa: E402
from tests.serve.conftest import start_server, stop_server  # noqa: E402

KEY = "sk-bench"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (the HTTP process; the engine runs in a child of its own)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench(server, key: str, args: argparse.Namespace, out: Path) -> dict:
    url = server.url
    before = cpu_seconds(server.proc.pid)
    subprocess.run([sys.executable, "-m", "swiftkit", "bench", "serve", "--url", url, "--api-key", key,
                    "--endpoint", "completions", "--concurrency", str(args.concurrency), "--requests",
                    str(args.requests), "--max-tokens", str(args.max_tokens), "--output", str(out)],
                   check=True, capture_output=True, cwd=ROOT)
    result = json.loads(out.read_text())
    result["http_cpu_us_per_request"] = 1e6 * (cpu_seconds(server.proc.pid) - before) / args.requests
    return result


def part_serving(args: argparse.Namespace, tmp: Path) -> None:
    database = str(tmp / "audit.db")
    proc = subprocess.run([sys.executable, "-m", "swiftkit", "keys", "create", "--database", database, "--tenant",
                           "bench", "--rpm", "1000000", "--tpm", "1000000000"], check=True, capture_output=True,
                          text=True, cwd=ROOT)
    tenant_key = proc.stdout.strip().splitlines()[-1]
    common = ["--model", args.model, "--served-model-name", "toy", "--dtype", "float32", "--max-model-len", "512",
              "--max-num-seqs", str(args.concurrency)]
    plain = start_server([*common, "--api-key", KEY], tmp / "plain.log")
    audited = start_server([*common, "--database", database, "--audit-content"], tmp / "audited.log")
    results: dict[str, list[dict]] = {"plain": [], "audited": []}
    try:
        for r in range(args.rounds):
            results["plain"].append(bench(plain, KEY, args, tmp / f"plain{r}.json"))
            results["audited"].append(bench(audited, tenant_key, args, tmp / f"audited{r}.json"))
    finally:
        stop_server(plain)
        stop_server(audited)
    rows = db.usage_report(db.connect(database))
    recorded = sum(r["requests"] for r in rows)
    print(f"\nserving: {args.rounds} rounds of {args.requests} completions x {args.max_tokens} tokens, concurrency "
          f"{args.concurrency}; audited server recorded {recorded} rows\n")
    print("| server | output tok/s | requests/s | mean latency (ms) | TTFT p50 (ms) | HTTP-process CPU per request (µs) |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        cells = [" / ".join(format(x[k] * scale, ".1f") for x in runs)
                 for k, scale in (("output_tok_s", 1), ("req_s", 1), ("latency_mean_s", 1000), ("ttft_p50_ms", 1),
                                  ("http_cpu_us_per_request", 1))]
        print(f"| {name} | {' | '.join(cells)} |")
    # The box is shared: rounds vary, so compare each audited run with the plain run just before it.
    ratios = [a["output_tok_s"] / p["output_tok_s"] for p, a in zip(results["plain"], results["audited"], strict=True)]
    deltas = [1000 * (a["latency_mean_s"] - p["latency_mean_s"])
              for p, a in zip(results["plain"], results["audited"], strict=True)]
    cpu = [a["http_cpu_us_per_request"] - p["http_cpu_us_per_request"]
           for p, a in zip(results["plain"], results["audited"], strict=True)]
    print(f"\nHTTP-process CPU per request, audited - plain (µs): {' '.join(f'{c:+.0f}' for c in cpu)} "
          f"(median {statistics.median(cpu):+.0f})")
    print(f"audited / plain tok/s per round: {' '.join(f'{r:.3f}' for r in ratios)} (median {statistics.median(ratios):.3f}); "
          f"mean latency delta per round (ms): {' '.join(f'{d:+.1f}' for d in deltas)} (median {statistics.median(deltas):+.1f})")


def part_writes(args: argparse.Namespace, tmp: Path) -> None:
    targets = {"sqlite": str(tmp / "writes.db")}
    if args.postgres:
        targets["postgresql"] = args.postgres
    row = {"time": db.now(), "tenant": "bench", "key_id": "key_bench", "model": "toy", "adapter": None,
           "endpoint": "/v1/chat/completions", "prompt_tokens": 20, "completion_tokens": 64, "latency_s": 0.5,
           "ttft_s": 0.05, "status": 200, "error_type": None, "request": None, "response": None}
    print(f"\ndatabase writes: {args.rows} usage rows per measurement\n")
    print("| database | batch 1 rows/s | batch 50 rows/s | batch 500 rows/s |")
    print("|---|---|---|---|")
    for name, url in targets.items():
        engine = db.connect(url)
        speeds = []
        for batch in (1, 50, 500):
            n = min(args.rows, 2000) if batch == 1 else args.rows
            start = time.perf_counter()
            for _ in range(n // batch):
                db.write_usage(engine, [row] * batch)
            speeds.append(n / (time.perf_counter() - start))
        print(f"| {name} | {' | '.join(f'{s:,.0f}' for s in speeds)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--postgres", help="a PostgreSQL URL for the write measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--skip-serving", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_serving:
            part_serving(args, Path(tmp))
        part_writes(args, Path(tmp))


if __name__ == "__main__":
    main()
