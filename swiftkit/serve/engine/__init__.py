"""The built-in continuous-batching engine, one concept per file (nano-vllm style):

request.py  per-request sampling params and state
kv_cache.py slot-based KV cache (one preallocated row per running sequence)
kv_blocks.py paged KV: block pool, block tables, prefix cache (the fast runner's CPU default)
spec.py     prompt-lookup speculative decoding (drafts and greedy acceptance)
runner.py   picks a runner; the plain one: batched prefill / decode of a transformers causal LM over that cache
fast_model.py, kernels.py, fast_runner.py  the fast runner: own Qwen2/Llama forward, Triton kernels, CUDA graphs
lora.py     the LoRA adapters a runner serves: names, run-time load/unload, stacked weights for mixed batches
vllm.py     vLLM's async engine behind the same interface (--engine vllm)
sampler.py  per-row logits processing and sampling
detokenizer.py incremental text + stop strings
scheduler.py who joins / leaves the running batch between steps, and (paged) which prompt chunks a step computes
engine.py   the background thread that loops step() and delivers outputs
"""

from swiftkit.serve.engine.engine import AsyncEngine, Engine, EngineBusy
from swiftkit.serve.engine.request import RequestOutput, SamplingParams

__all__ = ["AsyncEngine", "Engine", "EngineBusy", "RequestOutput", "SamplingParams"]
