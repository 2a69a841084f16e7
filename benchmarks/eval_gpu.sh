# Issue 17 on a GPU box (device tool): `swiftkit bench eval` — lm-eval's hf backend vs swiftkit's engine backend,
# same tasks and rows in one run — on a random-init architecture with the toy's byte-level BPE tokenizer (as
# benchmarks/sft_entrypoint/prep.py builds it; `bench engine`'s word tokenizer does not survive AutoTokenizer
# under transformers 5). Speed rows: the real tasks' text, so real prompt shapes (about 3x the tokens of a
# Qwen tokenizer); a random model scores chance. Results: docs/benchmarks.md.
#   bash benchmarks/eval_gpu.sh ARCH TASK LIMIT [FEWSHOT] [MAX_GEN_TOKS]
#   e.g. bash benchmarks/eval_gpu.sh qwen2.5-7b gsm8k 256           # 5-shot prompts, 256 new tokens, 256 samples
#        HF_BATCH=8 bash benchmarks/eval_gpu.sh qwen2.5-7b mmlu 23 5   # 11 subjects x 23 x 4 choices = 1,012 requests
# HF_BATCH: lm-eval hf's batch (the baseline's --baseline-batch-size); at 64 its MMLU log-softmax needs 131 GiB.
# Carried (git-ignored) in $W (default .cache/evalgpu): whl/ (cp312 wheels the GPU image lacks: lm_eval, evaluate,
# nltk, rouge_score, pytablewriter and its deps, sqlitedict, word2number, more_itertools, click, datasets, dill,
# multiprocess, trl, pydantic, pydantic-core, fastapi, starlette, uvicorn, llguidance, sqlalchemy, ...),
# tok/ (the toy tokenizer files) and data/ (../shared/data's mmlu and gsm8k slices).
set -o pipefail
ARCH=$1 TASK=$2 LIMIT=$3 FEWSHOT=${4:-} GEN=${5:-} W=${EVALGPU_DIR:-.cache/evalgpu} TIMEOUT=${EVAL_TIMEOUT:-560}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $W/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 COLUMNS=200
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# In memory (/dev/shm), not on the machine's disk: a first try spent most of its call writing and reading 15 GB.
M=/dev/shm/m_${ARCH}_toytok
date +%T
[ -f $M/config.json ] || python3 benchmarks/sft_entrypoint/prep.py $ARCH $W/tok $M /tmp/unused.jsonl 2>&1 | grep -v -iE "warn|shards" || exit 1
echo "+ swiftkit bench eval --model $M --data-dir $W/data --tasks $TASK --limit $LIMIT ${FEWSHOT:+--num-fewshot $FEWSHOT} ${GEN:+--max-gen-toks $GEN} --batch-size 64"
date +%T
# At TIMEOUT seconds SIGABRT makes faulthandler print every thread's stack: a stall shows where it is.
timeout -s ABRT $TIMEOUT python3 -X faulthandler -m swiftkit bench eval --model $M --data-dir $W/data --tasks $TASK --limit $LIMIT ${FEWSHOT:+--num-fewshot $FEWSHOT} \
  ${GEN:+--max-gen-toks $GEN} --batch-size 64 ${HF_BATCH:+--baseline-batch-size $HF_BATCH} --output $OUT/bench_eval_${ARCH}_$TASK.json 2>&1 | grep --line-buffered -v -iE "warn"
