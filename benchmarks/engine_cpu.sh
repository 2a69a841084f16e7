#!/usr/bin/env bash
# Issue 16's CPU table: `swiftkit serve` on SmolLM2-135M-Instruct (fp32) with the paged KV default and with
# --kv-cache slots, interleaved, through HTTP (`swiftkit bench serve`, chat, streaming, 128 new tokens); plus
# llama.cpp (F32 GGUF of the same weights, one thread) through llama-cpp-python's OpenAI server in the same
# harness, and in-process at one stream, in the same run.
# Usage: bash benchmarks/engine_cpu.sh MODEL_DIR F32_GGUF OUT_DIR [REPEATS]
set -euo pipefail
MODEL=$1 GGUF=$2 OUT=$3 REPEATS=${4:-2}
export OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
SK=${SK:-.venv/bin/swiftkit}
mkdir -p "$OUT"

rss_mb() {  # resident memory of a process and its children, MB
  local pids; pids=$(pgrep -P "$1" | tr '\n' ' ')
  ps -o rss= -p "$1" $pids | awk '{s+=$1} END {printf "%.0f", s/1024}'
}

measure() {  # tag, server pid, port, readiness path: 1 and 16 streams through `swiftkit bench serve`, resident memory under load
  local tag=$1 pid=$2 port=$3 ready=$4
  for _ in $(seq 120); do curl -sf http://127.0.0.1:$port$ready >/dev/null && break; sleep 1; done
  $SK bench serve --url http://127.0.0.1:$port --concurrency 1 --requests 4 --max-tokens 128 --output "$OUT/${tag}_c1.json" >/dev/null
  ( while kill -0 $pid 2>/dev/null; do rss_mb $pid >>"$OUT/${tag}_rss.txt"; echo >>"$OUT/${tag}_rss.txt"; sleep 1; done ) &
  local sampler=$!
  $SK bench serve --url http://127.0.0.1:$port --concurrency 16 --requests 32 --max-tokens 128 --output "$OUT/${tag}_c16.json" >/dev/null
  kill $sampler 2>/dev/null || true
  kill $pid; wait $pid 2>/dev/null || true
  $PY - "$OUT" "$tag" <<'PY'
import json, sys
out, tag = sys.argv[1:]
c1, c16 = (json.load(open(f"{out}/{tag}_c{n}.json")) for n in (1, 16))
rss = [int(x) for x in open(f"{out}/{tag}_rss.txt").read().split()]
print(f"| {tag} | {c1['output_tok_s']:.1f} ({c1['itl_p50_ms']:.1f} ms) | {c16['output_tok_s']:.1f} (ITL p50 {c16['itl_p50_ms']:.1f} ms) "
      f"| {max(rss) / 1024:.2f} GB |")
PY
}

serve_run() {  # tag, extra serve flags...
  local tag=$1; shift
  $SK serve --model "$MODEL" --dtype float32 --served-model-name smol --port 8391 "$@" >"$OUT/serve_$tag.log" 2>&1 &
  measure "$tag" $! 8391 /health
  grep -m1 "^engine" "$OUT/serve_$tag.log" || true
}

# llama.cpp behind an OpenAI HTTP server in the same harness: llama-cpp-python's server (`pip install
# sse-starlette starlette-context pydantic-settings` beside the export extra; not a project dependency).
# One thread, like the engine's; it serves one request at a time (--interrupt_requests False: queued, not cut off).
llama_server_run() {
  $PY -m llama_cpp.server --model "$GGUF" --model_alias smol --n_threads 1 --n_threads_batch 1 --n_ctx 4096 --interrupt_requests False \
     --port 8392 >"$OUT/llama_server_$1.log" 2>&1 &
  measure "llama_cpp_server_$1" $! 8392 /v1/models
}

llama_cpp_run() {
  $PY - "$GGUF" <<'PY'
import sys, time
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=512, n_threads=1, verbose=False)
messages = [{"role": "user", "content": "Write a long story about a dragon who learns to paint."}]
llm.create_chat_completion(messages, max_tokens=4)
for _ in range(2):
    start, stamps = time.perf_counter(), []
    for _chunk in llm.create_chat_completion(messages, max_tokens=128, stream=True, temperature=0):
        stamps.append(time.perf_counter())
    gaps = sorted(b - a for a, b in zip(stamps[1:], stamps[2:]))
    print(f"| llama-cpp-python F32, 1 thread, in-process | {(len(stamps) - 1) / (stamps[-1] - start):.1f} "
          f"({1000 * gaps[len(gaps) // 2]:.1f} ms) | (serialises requests) | |")
PY
}

echo "| server | 1 stream tok/s (ITL p50) | 16 streams tok/s | resident memory under load |"
echo "|---|---|---|---|"
for i in $(seq "$REPEATS"); do
  serve_run "paged_$i"
  serve_run "slots_$i" --kv-cache slots
  llama_server_run "$i"
  llama_cpp_run
done
