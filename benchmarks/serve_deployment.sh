#!/usr/bin/env bash
# Routing overhead of a deployment (docs/serve.md, "Several models"): tok/s of `swiftkit bench serve`
# through a two-model endpoint (toy-a, toy-b: the same toy, each its own engine process) against a
# direct single-model server of the same toy, in the same run, rounds interleaved (direct, deployment, ...).
# The toy decodes fast, so routing's share of each token is the largest any model shows. Also the CPU the
# HTTP process (the server's own, not its engine processes) spends per request, which the box's noise moves less.
#   benchmarks/serve_deployment.sh [TOY_DIR] [ROUNDS]
set -euo pipefail
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/.."
TOY=${1:-$(ls -d .cache/toy-* | head -1)}
ROUNDS=${2:-3}
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d)
ENGINE_OPTS="--dtype float32 --max-model-len 512 --max-num-seqs 16"
cat > "$WORK/deployment.yaml" <<YAML
dtype: float32
max_model_len: 512
max_num_seqs: 16
models:
  - {model: $TOY, served_model_name: toy-a}
  - {model: $TOY, served_model_name: toy-b}
YAML
$PY -m swiftkit serve --model "$TOY" --served-model-name toy-a $ENGINE_OPTS --port 8411 >"$WORK/direct.log" 2>&1 &
DIRECT=$!
$PY -m swiftkit serve --config "$WORK/deployment.yaml" --port 8412 >"$WORK/deployment.log" 2>&1 &
DEPLOY=$!
trap 'kill $DIRECT $DEPLOY 2>/dev/null; wait $DIRECT $DEPLOY 2>/dev/null' EXIT
for port in 8411 8412; do
  until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 1; done
done
BENCH="serve --model toy-a --endpoint completions --concurrency 8 --requests 64 --max-tokens 64"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for round in $(seq "$ROUNDS"); do
  for port in 8411 8412; do
    pid=$([ $port = 8411 ] && echo $DIRECT || echo $DEPLOY)
    before=$(cpu_ticks $pid)
    $PY -m swiftkit bench $BENCH --url "http://127.0.0.1:$port" --output "$WORK/r$round-$port.json" >/dev/null
    echo $(( $(cpu_ticks $pid) - before )) > "$WORK/cpu$round-$port"
  done
done
$PY - "$WORK" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
import os
def tps(port): return [json.load(open(f"{work}/r{r}-{port}.json"))["output_tok_s"] for r in range(1, rounds + 1)]
def cpu_ms(port):  # HTTP-process CPU per request: clock ticks / 64 requests
    hz = os.sysconf("SC_CLK_TCK")
    return [1000 * int(open(f"{work}/cpu{r}-{port}").read()) / hz / 64 for r in range(1, rounds + 1)]
rows = {"direct single-model server": 8411, "two-model deployment (toy-a)": 8412}
print("| endpoint | tok/s per round | median tok/s | HTTP-process CPU ms / request per round | median |")
print("|---|---|---|---|---|")
for name, port in rows.items():
    t, c = tps(port), cpu_ms(port)
    print(f"| {name} | {', '.join(f'{x:.0f}' for x in t)} | {statistics.median(t):.0f} | "
          f"{', '.join(f'{x:.1f}' for x in c)} | {statistics.median(c):.1f} |")
print(f"ratio deployment / direct (median tok/s): {statistics.median(tps(8412)) / statistics.median(tps(8411)):.3f}")
print(f"ratio deployment / direct (median CPU per request): {statistics.median(cpu_ms(8412)) / statistics.median(cpu_ms(8411)):.3f}")
PY
