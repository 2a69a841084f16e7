#!/usr/bin/env bash
# Routing overhead of a deployment (docs/serve.md, "Several models"): tok/s of `swiftkit bench serve`
# through a two-model endpoint (toy-a, toy-b: the same toy, each its own engine process) against a
# direct single-model server of the same toy, in the same run, rounds interleaved (direct, deployment, ...).
# The toy decodes fast, so routing's share of each token is the largest any model shows.
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
for round in $(seq "$ROUNDS"); do
  for port in 8411 8412; do
    $PY -m swiftkit bench $BENCH --url "http://127.0.0.1:$port" --output "$WORK/r$round-$port.json" >/dev/null
  done
done
$PY - "$WORK" "$ROUNDS" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
def tps(port): return [json.load(open(f"{work}/r{r}-{port}.json"))["output_tok_s"] for r in range(1, rounds + 1)]
direct, deploy = tps(8411), tps(8412)
print("| endpoint | tok/s per round | median |\n|---|---|---|")
print(f"| direct single-model server | {', '.join(f'{x:.0f}' for x in direct)} | {statistics.median(direct):.0f} |")
print(f"| two-model deployment (toy-a) | {', '.join(f'{x:.0f}' for x in deploy)} | {statistics.median(deploy):.0f} |")
print(f"ratio deployment / direct (medians): {statistics.median(deploy) / statistics.median(direct):.3f}")
PY
