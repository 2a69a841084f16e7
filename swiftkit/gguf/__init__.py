"""GGUF in and out: import a `.gguf` as a safetensors artifact, export an artifact to GGUF / Ollama.

Reading GGUF metadata uses llama.cpp's own `gguf` package; dequantizing uses transformers'
GGUF loader; writing and quantizing GGUF use llama.cpp's converter and library (swiftkit/gguf/llama_cpp.py).
"""
