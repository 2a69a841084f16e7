# Issue 8 on a GPU box (device tool): correctness of the fast engine's GPU paths, `swiftkit bench engine`
# (fast engine vs HF generate and transformers' continuous batching), and the real HTTP server under
# `swiftkit bench serve`. Results: docs/benchmarks.md.
#   bash benchmarks/engine_gpu.sh "BENCH_ARCHS" ENGINES "SERVE_ARCHS" "LONG_PROMPT_ARCHS"
#   e.g. bash benchmarks/engine_gpu.sh "qwen2.5-7b qwen2.5-1.5b" fast,hf,hf-cb "qwen2.5-7b" "qwen2.5-7b"
# LONG_PROMPT_ARCHS: issue 16's long-context row (chunked prefill): 64 streams of 1k-token prompts decode and one
# 30k-token prompt arrives mid-run (context 30k + 256 ≈ --max-model-len 32768), paged KV, chunks of $LONG_CHUNKS (512 2048).
# Carried (git-ignored) in $W (default .cache/enginegpu): whl/ (cp312 wheels the GPU image lacks: fastapi,
# starlette, uvicorn, pydantic, pydantic-core, annotated-types, typing-inspection, opentelemetry-api,
# llguidance, typer) and toy/ (a built toy model: `swiftkit toy`). ENGINE_CHECK=0 skips engine_gpu_check.py.
set -o pipefail
BENCH=$1 ENGINES=${2:-fast,hf} SERVE=$3 LONG=$4 W=${ENGINEGPU_DIR:-.cache/enginegpu}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $W/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 COLUMNS=160
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import importlib.metadata as m; print({p: m.version(p) for p in ('torch', 'transformers', 'triton')})"
[ "${ENGINE_CHECK:-1}" = 0 ] || python3 benchmarks/engine_gpu_check.py $W/toy 2>&1 | grep -v -iE "warn" | tee $OUT/engine_check.txt
for arch in $BENCH; do
  echo "+ swiftkit bench engine --model-config $arch --engines $ENGINES --concurrency 1,64 --output $OUT/bench_engine_$arch.json"
  python3 -m swiftkit bench engine --model-config $arch --engines $ENGINES --concurrency 1,64 \
     --output $OUT/bench_engine_$arch.json 2>&1 | grep --line-buffered -v -iE "warn"
done
for arch in $LONG; do
  for chunk in ${LONG_CHUNKS:-512 2048}; do
    echo "+ swiftkit bench engine --model-config $arch --engines fast --concurrency 64 --prompt-len 1024 --max-tokens 256 --long-prompt 30000 --prefill-chunk $chunk"
    timeout 300 python3 -m swiftkit bench engine --model-config $arch --engines fast --concurrency 64 --prompt-len 1024 --max-tokens 256 \
       --long-prompt 30000 --prefill-chunk $chunk --fidelity-tokens 0 --output $OUT/bench_long_prompt_${arch}_chunk$chunk.json 2>&1 | grep --line-buffered -v -iE "warn"
  done
done
for arch in $SERVE; do
  python3 -c "from swiftkit.bench.engine import save_random_model; save_random_model('$arch', '/dev/shm/m_$arch')" || exit 1
  python3 -m swiftkit serve --model /dev/shm/m_$arch --dtype bfloat16 --max-num-seqs 64 --max-model-len 512 --port 8011 \
     > /tmp/serve_$arch.log 2>&1 &
  for i in $(seq 300); do curl -sf http://127.0.0.1:8011/health > /dev/null && break; sleep 1; done
  for c in 1 64; do
    n=$(( c == 1 ? 4 : 64 ))
    echo "+ swiftkit bench serve --url http://127.0.0.1:8011 --endpoint completions --prompt-tokens 128 --max-tokens 256 --concurrency $c --requests $n"
    timeout 200 python3 -m swiftkit bench serve --url http://127.0.0.1:8011 --endpoint completions --prompt-tokens 128 --max-tokens 256 \
       --concurrency $c --requests $n --output $OUT/bench_serve_${arch}_c$c.json 2>&1 | grep --line-buffered -v -iE "warn"
  done
  kill %1; wait; grep -iE "model|engine|graph|error|Traceback" /tmp/serve_$arch.log | head -20
  rm -rf /dev/shm/m_$arch
done
