# `swiftkit sft` itself (defaults, packed) and `swiftkit bench train` on a GPU box (device tool), random-init
# Qwen2.5 architectures with the toy tokenizer and Alpaca-shaped lengths. Results: docs/benchmarks.md (issue 9).
#   bash benchmarks/sft_entrypoint/run.sh "SFT_ARCHS" STEPS "BENCH_ARCHS"
#   e.g. bash benchmarks/sft_entrypoint/run.sh "qwen2.5-1.5b" 300 "qwen2.5-1.5b qwen2.5-7b"
# SFT_FLAGS adds flags to every sft run (e.g. "--batch-size 8"); TAG names its manifest copies.
# Carried (git-ignored) in $W (default .cache/sftgpu): whl/ (cp312 wheels the GPU image lacks: datasets, dill,
# multiprocess, pydantic, pydantic-core, annotated-types, typing-inspection, typer, trl) and tok/ (the toy
# tokenizer: tokenizer.json, tokenizer_config.json, chat_template.jinja).
set -o pipefail
SFT=$1 STEPS=${2:-300} BENCH=$3 W=${SFTGPU_DIR:-.cache/sftgpu}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $W/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 COLUMNS=160
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import importlib.metadata as m; print({p: m.version(p) for p in ('torch', 'transformers', 'peft', 'trl', 'triton')})"
for arch in $SFT; do
  python3 benchmarks/sft_entrypoint/prep.py $arch $W/tok /tmp/m_$arch /tmp/sft_$arch.jsonl 2>&1 | grep -v -iE "warn|shards" || exit 1
  echo "+ swiftkit sft --model /tmp/m_$arch --data /tmp/sft_$arch.jsonl --max-steps $STEPS --eval-split 0 --logging-steps 50 --output /tmp/out_$arch $SFT_FLAGS"
  /usr/bin/time -f "sft $arch wall %e s" python3 -m swiftkit sft --model /tmp/m_$arch --data /tmp/sft_$arch.jsonl --max-steps $STEPS \
     --eval-split 0 --logging-steps 50 --output /tmp/out_$arch $SFT_FLAGS 2>&1 | grep -v -iE "warn|it/s\]"
  cp /tmp/out_$arch/swiftkit.json $OUT/manifest_sft_$arch$TAG.json
  rm -rf /tmp/m_$arch /tmp/out_$arch
done
for arch in $BENCH; do
  echo "+ swiftkit bench train --model-config $arch --min-seconds 4 --output $OUT/bench_train_$arch.json"
  python3 -m swiftkit bench train --model-config $arch --min-seconds 4 --output $OUT/bench_train_$arch.json 2>&1 | grep -v -iE "warn"
done
