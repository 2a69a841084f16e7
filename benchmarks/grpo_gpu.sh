# Issue 15 on a GPU box (device tool): GRPO rollouts on swiftkit's engine vs TRL's generate (greedy equality
# in fp32 on the toy, then a 1.5B architecture: rollout tok/s and step time, ratio in one run).
# Results: docs/benchmarks.md.
#   bash benchmarks/grpo_gpu.sh TOY_DIR "ARCHS" STEPS
#   e.g. bash benchmarks/grpo_gpu.sh .cache/toy-2a610a3d2c4c "qwen2.5-1.5b" 4
# Carried (git-ignored) in $W (default .cache/grpogpu): whl/ (cp312 wheels the GPU image lacks: trl, datasets,
# dill, multiprocess, xxhash, pydantic, pydantic-core, annotated-types, typing-inspection).
set -o pipefail
TOY=$1 ARCHS=${2:-qwen2.5-1.5b} STEPS=${3:-4} W=${GRPOGPU_DIR:-.cache/grpogpu}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $W/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 COLUMNS=160
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import importlib.metadata as m; print({p: m.version(p) for p in ('torch', 'transformers', 'peft', 'trl', 'triton')})"
for arch in $ARCHS; do
  echo "+ python3 benchmarks/grpo_rollouts.py --arch $arch --steps $STEPS --check-toy $TOY --output $OUT/grpo_$arch.json"
  python3 benchmarks/grpo_rollouts.py --arch $arch --steps $STEPS --check-toy $TOY --output $OUT/grpo_$arch.json 2>&1 \
    | grep -v -iE "warn"
done
