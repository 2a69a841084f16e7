# Runs the real `swiftkit sft` entry point on a GPU box (device tool): random-init Qwen2.5-1.5B + toy tokenizer,
# Alpaca-shaped lengths. Needs wheels in benchmarks/sft_entrypoint/whl (datasets, dill, multiprocess, pydantic,
# pydantic-core, annotated-types, typing-inspection, typer, trl; pip download for cp312) and, beside prep.py,
# the toy tokenizer files and benchmarks/data/alpaca_en_lengths.json. Results: docs/benchmarks.md.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site benchmarks/sft_entrypoint/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 COLUMNS=120
nvidia-smi --query-gpu=name --format=csv,noheader
python3 benchmarks/sft_entrypoint/prep.py /tmp/m15 /tmp/sft.jsonl 2>&1 | grep -v -i warn | tail -3 || exit 1
for mode in packed padded; do
  extra=""; [ $mode = padded ] && extra="--no-packing --batch-size 8"
  /usr/bin/time -f "$mode wall %e s" python3 -m swiftkit sft --model /tmp/m15 --data /tmp/sft.jsonl --max-steps 40 --eval-split 0 \
     --logging-steps 10 --dtype bfloat16 --output /tmp/out_$mode $extra 2>&1 | grep -v -iE "warn|it/s\]" | tail -25
  python3 -c "import json,torch; m=json.load(open('/tmp/out_$mode/swiftkit.json'))['metrics']; print('$mode', {k: m[k] for k in ('steps','train_tokens','tokens_per_second','train_runtime_s','train_loss')})" | tee -a $OUT/sft_gpu_entrypoint.txt
  cp /tmp/out_$mode/swiftkit.json $OUT/manifest_$mode.json
done
